"""dm_control and Gymnasium MuJoCo tasks behind one small interface (``envs.base.Env``).

``make_env`` picks the backend from the task name: ``domain_task`` names are
dm_control suite tasks, ``Name-vN`` names are Gymnasium ids.
"""

from __future__ import annotations

import os

# Headless rendering: without a display dm_control would try GLFW. EGL with
# Mesa's software renderer works on CPU-only machines; callers can still pick
# osmesa by setting MUJOCO_GL themselves before import.
os.environ.setdefault("MUJOCO_GL", "egl")

from contract.tasks import (  # noqa: E402, F401 - the names a config accepts, defined with the contract
    DMC_ALIASES,
    all_task_names,
    check_task_name,
    dmc_task_names,
    gym_task_names,
    is_gym_task,
)
from envs.base import IMAGE_SIZE, Env, Step  # noqa: E402

__all__ = ["Env", "Step", "make_env", "check_task_name", "all_task_names", "is_gym_task"]


def make_env(
    task: str, obs_type: str, seed: int, action_repeat: int, frame_stack: int, image_size: int = IMAGE_SIZE
) -> Env:
    check_task_name(task)
    if is_gym_task(task):
        from envs.gym_mujoco import GymMujocoEnv

        return GymMujocoEnv(task, obs_type, seed, action_repeat, frame_stack, image_size)
    from envs.dmc import DMCEnv

    domain, task_name = dmc_task_names()[task]
    return DMCEnv(domain, task_name, obs_type, seed, action_repeat, frame_stack, image_size)
