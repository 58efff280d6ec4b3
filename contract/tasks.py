"""The task names a trial config accepts: dm_control suite tasks as ``domain_task`` and Gymnasium MuJoCo ids as
``Name-vN``.  Part of the contract because the config's validation needs them before any environment is built;
the suites are imported only when a name is checked (neither imports torch).  ``envs`` builds the environments.
"""

from __future__ import annotations

import difflib
import re

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
