"""The two derived measures (their names, with every metric's: ``contract/metrics.py``).

``q_bias`` and ``Coverage`` follow method.md §7; both are pure functions of arrays so
they can be checked against hand-computed values.
"""

from __future__ import annotations

import zlib

import numpy as np

from contract.metrics import (  # noqa: F401 - the names: the worker's modules take them from here too
    ACTOR_LOSS,
    ACTOR_STD,
    BN_MISMATCH,
    COLUMNS,
    COVERAGE,
    CRITIC_LOSS,
    EVAL_RETURN,
    FPS,
    FRAME,
    METRIC_NAMES,
    Q_BIAS_MEAN,
    Q_BIAS_STD,
    Q_MEAN,
    STATE_COVERAGE,
    TRAIN_LENGTH,
    TRAIN_RETURN,
    UPDATE_MS,
)


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


class StateCoverage:
    """Distinct cells of the state alone, each dimension in units of a fixed reference's spread (method.md §7).

    This project's exploration proxy (the authors released no coverage code). ``coverage/cells`` projects
    [s; a] unscaled, so on cartpole_swingup the pole's angular velocity dominates it and a policy that pumps
    energy and never balances scores far above one that swings up and balances. Here:

    - the reference is the trial's first ``reference_steps`` states: the uniform-random exploration phase every
      method shares (``num_expl_steps``; the same states for every method at one seed), so the scale is no
      method's own;
    - coordinate i of a state is z_i = (s_i - mean_i) / std_i over the reference (dimensions the reference
      never varied carry no scale and are left out), and its cell is floor(z / cell_size);
    - only states within ``reach`` reference deviations on every dimension count: a quantity driven ever
      further out (the runaway velocity of a pole pumped and never caught) is one failure, not exploration.
      At 3 such a failure scores no more than a policy that balances (method.md §7: at 6 or more it wins).

    States before the reference is complete are held and counted once it is (the count is 0 until then).
    tests/agent/test_coverage_policies.py checks it with scripted policies on real dm_control.
    """

    def __init__(self, reference_steps: int, cell_size: float = 0.5, reach: float = 3.0):
        if reference_steps < 2:
            raise ValueError(f"reference_steps={reference_steps}: a spread needs at least 2 states")
        self.reference_steps = reference_steps
        self.cell_size = cell_size
        self.reach = reach
        self.reference: list[np.ndarray] = []
        self.center: np.ndarray | None = None
        self.scale: np.ndarray | None = None  # NaN where the reference did not vary (dimension left out)
        self.cells: set[bytes] = set()

    def add(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if self.center is None:
            self.reference.append(state)
            if len(self.reference) >= self.reference_steps:
                self._fix_reference()
            return
        self._count(state)

    def _fix_reference(self) -> None:
        reference = np.stack(self.reference)
        spread = reference.std(axis=0)
        self.center = reference.mean(axis=0)
        self.scale = np.where(spread > 1e-8, spread, np.nan)
        for state in self.reference:
            self._count(state)
        self.reference = []

    def _count(self, state: np.ndarray) -> None:
        assert self.center is not None and self.scale is not None
        z = ((state - self.center) / self.scale)[np.isfinite(self.scale)]
        if np.all(np.abs(z) <= self.reach):
            self.cells.add(np.floor(z / self.cell_size).astype(np.int64).tobytes())

    def __len__(self) -> int:
        return len(self.cells)

    def state_dict(self) -> dict:
        return {
            "cells": sorted(self.cells),
            "reference": [s.tolist() for s in self.reference],
            "center": None if self.center is None else self.center.tolist(),
            "scale": None if self.scale is None else self.scale.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.cells = set(state["cells"])
        self.reference = [np.asarray(s, dtype=np.float64) for s in state["reference"]]
        self.center = None if state["center"] is None else np.asarray(state["center"], dtype=np.float64)
        self.scale = None if state["scale"] is None else np.asarray(state["scale"], dtype=np.float64)


class Coverage:
    """Distinct cells floor(P [s; a] / h) visited by training transitions so far, and (with
    ``state_reference_steps``) the state cells of ``StateCoverage`` beside them."""

    def __init__(self, projection: np.ndarray, cell_size: float, state_reference_steps: int | None = None):
        self.projection = projection
        self.cell_size = cell_size
        self.cells: set[bytes] = set()
        self.states = StateCoverage(state_reference_steps) if state_reference_steps is not None else None

    def cell(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        point = self.projection @ np.concatenate([state, action]).astype(np.float64)
        return np.floor(point / self.cell_size).astype(np.int64)

    def add(self, state: np.ndarray, action: np.ndarray) -> None:
        self.cells.add(self.cell(state, action).tobytes())
        if self.states is not None:
            self.states.add(state)

    def __len__(self) -> int:
        return len(self.cells)

    def values(self) -> dict[str, float]:
        """The metric row entries: coverage/cells, and coverage/state_cells when it is measured."""
        out = {COVERAGE: float(len(self.cells))}
        if self.states is not None:
            out[STATE_COVERAGE] = float(len(self.states))
        return out

    def state_dict(self) -> dict:
        state: dict = {"cells": sorted(self.cells)}
        if self.states is not None:
            state["state_cells"] = self.states.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.cells = set(state["cells"])
        if self.states is not None:
            if "state_cells" in state:
                self.states.load_state_dict(state["state_cells"])
            else:  # a checkpoint from before coverage/state_cells: its reference phase is gone, so none is logged
                self.states = None
