"""Metric names (the contract between worker, store, W&B and analysis) and the two derived measures.

``q_bias`` and ``Coverage`` follow method.md §7; both are pure functions of arrays so
they can be checked against hand-computed values.
"""

from __future__ import annotations

import zlib

import numpy as np

FRAME = "frame"
EVAL_RETURN = "eval/episode_return"
TRAIN_RETURN = "train/episode_return"
TRAIN_LENGTH = "train/episode_length"
Q_BIAS_MEAN = "q_bias/mean"
Q_BIAS_STD = "q_bias/std"
COVERAGE = "coverage/cells"
CRITIC_LOSS = "losses/critic"
ACTOR_LOSS = "losses/actor"
Q_MEAN = "q/mean"
ACTOR_STD = "actor/std"
BN_MISMATCH = "bn/critic_i_batch_vs_running"
FPS = "perf/fps"
UPDATE_MS = "perf/update_ms"

METRIC_NAMES = (
    EVAL_RETURN,
    TRAIN_RETURN,
    TRAIN_LENGTH,
    Q_BIAS_MEAN,
    Q_BIAS_STD,
    COVERAGE,
    CRITIC_LOSS,
    ACTOR_LOSS,
    Q_MEAN,
    ACTOR_STD,
    BN_MISMATCH,
    FPS,
    UPDATE_MS,
)
COLUMNS = (FRAME, *METRIC_NAMES)


def discounted_returns(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = sum_k discount^k r_{t+k}, truncated at the episode's end."""
    returns = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + discount * running
        returns[t] = running
    return returns


def q_bias(q_values: np.ndarray, mc_returns: np.ndarray) -> tuple[float, float]:
    """Relative bias (Q - G) / (|mean G| + 1e-3): its mean and std over states."""
    q_values = np.asarray(q_values, dtype=np.float64)
    mc_returns = np.asarray(mc_returns, dtype=np.float64)
    relative = (q_values - mc_returns) / (abs(mc_returns.mean()) + 1e-3)
    return float(relative.mean()), float(relative.std())


def projection_matrix(task: str, input_dim: int, dims: int) -> np.ndarray:
    """A fixed Gaussian projection seeded by the task name (stable across processes and machines).

    Entries are N(0, 1/input_dim) so projected coordinates keep the scale of the
    inputs' RMS whatever the state size (this project's choice; method.md §7 leaves it open).
    """
    rng = np.random.default_rng(zlib.crc32(task.encode()))
    return rng.normal(0.0, 1.0 / np.sqrt(input_dim), size=(dims, input_dim))


class Coverage:
    """Distinct cells floor(P [s; a] / h) visited by training transitions so far."""

    def __init__(self, projection: np.ndarray, cell_size: float):
        self.projection = projection
        self.cell_size = cell_size
        self.cells: set[bytes] = set()

    def cell(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        point = self.projection @ np.concatenate([state, action]).astype(np.float64)
        return np.floor(point / self.cell_size).astype(np.int64)

    def add(self, state: np.ndarray, action: np.ndarray) -> None:
        self.cells.add(self.cell(state, action).tobytes())

    def __len__(self) -> int:
        return len(self.cells)

    def state_dict(self) -> dict:
        return {"cells": sorted(self.cells)}

    def load_state_dict(self, state: dict) -> None:
        self.cells = set(state["cells"])
