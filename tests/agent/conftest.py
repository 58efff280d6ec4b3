"""Tiny real pieces for the worker tests: a real cartpole, a real replay, small networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.drqv2 import DrQV2Agent
from agent.replay import ReplayBuffer
from contract.config import build_config
from envs import make_env

TINY = dict(
    task="cartpole_swingup",
    obs_type="states",
    hidden_dim=16,
    feature_dim=8,
    batch_size=8,
    num_seed_frames=200,
    num_expl_steps=100,
    eval_every_frames=0,
    log_every_frames=200,
    checkpoint_every_frames=0,
    torch_threads=1,
)


def _tiny_config(**overrides):
    return build_config({**TINY, **overrides})


def _make_agent(config, obs_dim: int = 5, action_dim: int = 1) -> DrQV2Agent:
    """A pack for one config (K = 1) or a list of configs (K members)."""
    torch.manual_seed(0)
    return DrQV2Agent(config, (obs_dim,), action_dim, torch.device("cpu"))


def packed(batch: dict[str, np.ndarray], k: int = 1) -> dict[str, np.ndarray]:
    """One member's batch (rows, ...) as the batch of a pack of k members that all see it: (k, rows, ...)."""
    return {key: np.repeat(value[None], k, axis=0) for key, value in batch.items()}


def scalar_metrics(result) -> dict[str, float]:
    """The metrics of a one-member update as plain floats."""
    return {key: float(values[0]) for key, values in result.read().items()}


@pytest.fixture
def tiny_config():
    """build_config with tiny networks and budgets; keyword overrides on top."""
    return _tiny_config


@pytest.fixture
def make_agent():
    """A DrQ-v2 agent (a pack of one config, or of a list) for 5-dim cartpole states and 1-dim actions."""
    return _make_agent


@pytest.fixture(scope="session")
def state_batch() -> dict[str, np.ndarray]:
    """A batch of real cartpole transitions (random actions), 64 rows."""
    env = make_env("cartpole_swingup", "states", seed=0, action_repeat=2, frame_stack=1)
    replay = ReplayBuffer(500, env.frame_shape, np.float32, 1, env.action_dim, nstep=3, discount=0.99, seed=0)
    rng = np.random.default_rng(0)
    step = env.reset()
    replay.add(step.frame, None, 0.0, 1.0, first=True, last=False)
    for _ in range(200):
        action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        step = env.step(action)
        replay.add(step.frame, action, step.reward, step.discount, first=False, last=step.last)
    return replay.sample(64)


@pytest.fixture
def float64():
    """torch's default dtype float64 for one test (exact comparisons up to summation order)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
