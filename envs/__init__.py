"""dm_control and Gymnasium MuJoCo tasks behind one small interface (``envs.base.Env``).

``make_env`` picks the backend from the task name: ``domain_task`` names are
dm_control suite tasks, ``Name-vN`` names are Gymnasium ids.
"""

from __future__ import annotations

import difflib
import os
import re

# Headless rendering: without a display dm_control would try GLFW. EGL with
# Mesa's software renderer works on CPU-only machines; callers can still pick
# osmesa by setting MUJOCO_GL themselves before import.
os.environ.setdefault("MUJOCO_GL", "egl")

from envs.base import Env, Step  # noqa: E402

__all__ = ["Env", "Step", "make_env", "check_task_name", "all_task_names", "is_gym_task"]

DMC_ALIASES = {"cup_catch": ("ball_in_cup", "catch")}  # DrQ-v2's short name


def is_gym_task(task: str) -> bool:
    """Gymnasium ids look like ``Name-vN``; dm_control names are ``domain_task``."""
    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9]*-v\d+", task))


def dmc_task_names() -> dict[str, tuple[str, str]]:
    from dm_control import suite

    names = {f"{domain}_{task}": (domain, task) for domain, task in suite.ALL_TASKS}
    names.update(DMC_ALIASES)
    return names


def gym_task_names() -> list[str]:
    import gymnasium

    mujoco_ids = []
    for env_id, spec in gymnasium.envs.registry.items():
        entry = str(spec.entry_point)
        if "mujoco" in entry and env_id.endswith("-v5"):
            mujoco_ids.append(env_id)
    return sorted(mujoco_ids)


def all_task_names() -> list[str]:
    return sorted(dmc_task_names()) + gym_task_names()


def check_task_name(task: str) -> None:
    """Raise ValueError naming close valid tasks when ``task`` is unknown."""
    known = gym_task_names() if is_gym_task(task) else list(dmc_task_names())
    if task in known:
        return
    close = difflib.get_close_matches(task, all_task_names(), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown task{hint} (dm_control tasks are domain_task, e.g. cartpole_swingup; "
        f"Gymnasium MuJoCo ids are e.g. Hopper-v5)"
    )


def make_env(task: str, obs_type: str, seed: int, action_repeat: int, frame_stack: int, image_size: int = 84) -> Env:
    check_task_name(task)
    if is_gym_task(task):
        from envs.gym_mujoco import GymMujocoEnv

        return GymMujocoEnv(task, obs_type, seed, action_repeat, frame_stack, image_size)
    from envs.dmc import DMCEnv

    domain, task_name = dmc_task_names()[task]
    return DMCEnv(domain, task_name, obs_type, seed, action_repeat, frame_stack, image_size)
