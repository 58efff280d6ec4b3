"""The facts the memory and disk plan reads from the agent and the environments (issue #20, item 4): replay slots
and bytes per transition against a real replay's arrays, parameter counts against really built networks, the
task table against built environments' specs."""

from __future__ import annotations

import pytest
import torch

from agent.drqv2 import NETWORKS, DrQV2Agent
from agent.member_world import MemberWorld
from agent.networks import parameter_count
from agent.replay import FRAME_DTYPES, ReplayBuffer, raw_frame_bytes, replay_slots, slot_bytes
from contract.config import build_config
from contract.tasks import ACTION_DIM_BOUND, STATE_DIM_BOUND, TASK_DIMS, task_dims
from envs import make_env
from envs.base import observation_layout


# ------------------------------------------------------------------ replay
def test_replay_slots_cap_the_capacity_at_what_a_trial_fills() -> None:
    assert replay_slots(1_000_000, 2000, 2, 3) == 1000 + 2 * 3 + 2
    assert replay_slots(1_000_000, 2001, 2, 3) == 1001 + 2 * 3 + 2  # a last, partial agent step
    assert replay_slots(500, 2000, 2, 3) == 500


@pytest.mark.parametrize("replay_capacity", [100_000, 300], ids=["trial-bound", "capacity-bound"])
def test_the_worker_allocates_replay_slots(replay_capacity: int) -> None:
    config = build_config(
        {"task": "cartpole_swingup", "obs_type": "states", "num_frames": 1000, "replay_capacity": replay_capacity}
    )
    world = MemberWorld(config)
    try:
        slots = replay_slots(config.replay_capacity, config.num_frames, config.action_repeat, config.frame_stack)
        assert world.replay.capacity == slots == min(replay_capacity, 500 + 2 * config.frame_stack + 2)
    finally:
        world.env.close()
        world.eval_env.close()


@pytest.mark.parametrize(
    ("obs_type", "task", "frame_codec"),
    [("pixels", "cartpole_swingup", "none"), ("states", "cheetah_run", "none"), ("pixels", "hopper_hop", "lz4")],
)
def test_bytes_per_transition_are_the_arrays_a_replay_allocates(obs_type: str, task: str, frame_codec: str) -> None:
    dims = task_dims(task)
    layout = observation_layout(obs_type, dims.state_dim, frame_stack=3)
    frame, slot, capacity = raw_frame_bytes(obs_type, layout.frame_shape), slot_bytes(dims.action_dim), 64
    dtype = FRAME_DTYPES[obs_type]
    replay = ReplayBuffer(capacity, layout.frame_shape, dtype, 3, dims.action_dim, 3, 0.99, 0, frame_codec)
    per_slot = (replay.actions, replay.rewards, replay.discounts, replay.episode_start, replay.episode_end)
    assert sum(a.nbytes for a in per_slot) == capacity * slot
    if frame_codec == "none":  # frames preallocated: the replay's own accounting says the same
        assert replay.frames.nbytes == capacity * frame
        assert replay.bytes_per_transition == frame + slot


# ------------------------------------------------------------------ networks
@pytest.mark.parametrize(
    "overrides",
    [
        {"obs_type": "states", "actor_norm": "none", "critic_norm": "none", "hidden_dim": 32},
        {"obs_type": "states", "actor_norm": "layer_norm", "critic_norm": "batch_norm", "hidden_dim": 48},
        {"obs_type": "states", "task": "cheetah_run", "feature_dim": 16, "hidden_dim": 64},
        {"obs_type": "pixels", "encoder_norm": "none", "actor_norm": "batch_norm", "critic_norm": "layer_norm"},
        {"obs_type": "pixels", "encoder_norm": "batch_norm", "actor_norm": "none", "frame_stack": 2},
    ],
    ids=["states-none", "states-ln-bn", "states-cheetah", "pixels-bn-ln", "pixels-encoder-bn"],
)
def test_parameter_count_is_the_built_networks(overrides: dict) -> None:
    """Counted on the meta device, equal to what a really built agent saves and trains."""
    config = build_config({"task": "cartpole_swingup", "hidden_dim": 32, "feature_dim": 8, **overrides})
    dims = task_dims(config.task)
    shape = observation_layout(config.obs_type, dims.state_dim, config.frame_stack).obs_shape
    agent = DrQV2Agent(config, shape, dims.action_dim, torch.device("cpu"))
    state = agent.member_state_dict(0)
    saved = sum(value.numel() for name in NETWORKS for value in state[name].values())
    trained = sum(
        p.numel() for opt in (agent.actor_opt, agent.critic_opt, agent.encoder_opt) if opt for p in opt.params
    )
    count = parameter_count(config, shape, dims.action_dim)
    assert (count.saved, count.trained) == (saved, trained)
    assert count.saved > count.trained  # the critic target (and any BN statistics) are saved, never trained


# ------------------------------------------------------------------ tasks
@pytest.mark.parametrize("task", ["cartpole_swingup", "cup_catch", "Hopper-v5"])
def test_task_dims_are_the_environments(task: str) -> None:
    env = make_env(task, "states", seed=0, action_repeat=1, frame_stack=1)
    try:
        assert task_dims(task) == (env.state_dim, env.action_dim, True)
        assert env.obs_shape == observation_layout("states", env.state_dim, frame_stack=3).obs_shape
    finally:
        env.close()


def test_an_unknown_task_gets_safe_upper_bounds() -> None:
    assert task_dims("some_new_task") == (STATE_DIM_BOUND, ACTION_DIM_BOUND, False)
    assert max(state for state, _ in TASK_DIMS.values()) < STATE_DIM_BOUND
    assert max(action for _, action in TASK_DIMS.values()) < ACTION_DIM_BOUND
