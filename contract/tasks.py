"""The task names a trial config accepts: dm_control suite tasks as ``domain_task`` and Gymnasium MuJoCo ids as
``Name-vN``, and each task's state and action dimensions (``task_dims``).  Part of the contract because the config's
validation and the memory plan need them before any environment is built; the suites are imported only when a name
is checked (neither imports torch).  ``envs`` builds the environments.
"""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple

DMC_ALIASES = {"cup_catch": ("ball_in_cup", "catch")}  # DrQ-v2's short name

# (state_dim, action_dim) of every dm_control suite task and Gymnasium MuJoCo v5 task, read from their specs
# (dm_control 1.0.50, gymnasium 1.x; tests/agent/test_agent_facts.py checks some against built environments):
# the memory and disk plan needs them without building environments.
TASK_DIMS: dict[str, tuple[int, int]] = {
    "acrobot_swingup": (6, 1),
    "acrobot_swingup_sparse": (6, 1),
    "ball_in_cup_catch": (8, 2),
    "cup_catch": (8, 2),
    "cartpole_balance": (5, 1),
    "cartpole_balance_sparse": (5, 1),
    "cartpole_swingup": (5, 1),
    "cartpole_swingup_sparse": (5, 1),
    "cartpole_three_poles": (11, 1),
    "cartpole_two_poles": (8, 1),
    "cheetah_run": (17, 6),
    "dog_fetch": (232, 38),
    "dog_run": (223, 38),
    "dog_stand": (223, 38),
    "dog_trot": (223, 38),
    "dog_walk": (223, 38),
    "finger_spin": (9, 2),
    "finger_turn_easy": (12, 2),
    "finger_turn_hard": (12, 2),
    "fish_swim": (24, 5),
    "fish_upright": (21, 5),
    "hopper_hop": (15, 4),
    "hopper_stand": (15, 4),
    "humanoid_CMU_run": (137, 56),
    "humanoid_CMU_stand": (137, 56),
    "humanoid_CMU_walk": (137, 56),
    "humanoid_run": (67, 21),
    "humanoid_run_pure_state": (55, 21),
    "humanoid_stand": (67, 21),
    "humanoid_walk": (67, 21),
    "lqr_lqr_2_1": (4, 1),
    "lqr_lqr_6_2": (12, 2),
    "manipulator_bring_ball": (44, 5),
    "manipulator_bring_peg": (44, 5),
    "manipulator_insert_ball": (44, 5),
    "manipulator_insert_peg": (44, 5),
    "pendulum_swingup": (3, 1),
    "point_mass_easy": (4, 2),
    "point_mass_hard": (4, 2),
    "quadruped_escape": (101, 12),
    "quadruped_fetch": (90, 12),
    "quadruped_run": (78, 12),
    "quadruped_walk": (78, 12),
    "reacher_easy": (6, 2),
    "reacher_hard": (6, 2),
    "stacker_stack_2": (49, 5),
    "stacker_stack_4": (63, 5),
    "swimmer_swimmer15": (61, 14),
    "swimmer_swimmer6": (25, 5),
    "walker_run": (24, 6),
    "walker_stand": (24, 6),
    "walker_walk": (24, 6),
    "Ant-v5": (105, 8),
    "HalfCheetah-v5": (17, 6),
    "Hopper-v5": (11, 3),
    "Humanoid-v5": (348, 17),
    "HumanoidStandup-v5": (348, 17),
    "InvertedDoublePendulum-v5": (9, 1),
    "InvertedPendulum-v5": (4, 1),
    "Pusher-v5": (23, 7),
    "Reacher-v5": (10, 2),
    "Swimmer-v5": (8, 2),
    "Walker2d-v5": (17, 6),
}
# Safe upper bounds for a task missing above (the largest above: 348 and 56).
STATE_DIM_BOUND, ACTION_DIM_BOUND = 512, 64


class TaskDims(NamedTuple):
    state_dim: int
    action_dim: int
    known: bool  # False: the task is not in TASK_DIMS and the dimensions are the safe upper bounds


def task_dims(task: str) -> TaskDims:
    """The task's state and action dimensions, or safe upper bounds for a task missing from TASK_DIMS."""
    if task in TASK_DIMS:
        return TaskDims(*TASK_DIMS[task], known=True)
    return TaskDims(STATE_DIM_BOUND, ACTION_DIM_BOUND, known=False)


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
