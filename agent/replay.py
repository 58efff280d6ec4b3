"""In-memory replay with each frame stored once and n-step returns computed at sampling time.

Slots form one ring indexed by a global step counter ``g`` (slot = g % capacity).
Slot g holds what arrived at step g: the newest frame of the observation, the
action that led to it, the reward and the environment discount (0 at a true
termination).  A pixel observation is rebuilt from the last ``frame_stack``
frames, clamped at the episode's first frame (the stacker repeats it at reset).
Sampling is uniform over stored transitions; a transition whose n-step window
runs past the end of a finished episode is cut there (a shorter, still
correctly bootstrapped return), and one in the running episode waits for its
full window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_OPEN = np.iinfo(np.int64).max  # episode_end of an episode still running


class ReplayBuffer:
    def __init__(self, capacity: int, frame_shape: tuple[int, ...], frame_dtype: Any, frame_stack: int,
                 action_dim: int, nstep: int, discount: float, seed: int):
        self.capacity = int(capacity)
        self.frame_stack = frame_stack
        self.nstep = nstep
        self.discount = discount
        self.frames = np.zeros((self.capacity, *frame_shape), dtype=frame_dtype)
        self.actions = np.zeros((self.capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.discounts = np.zeros(self.capacity, dtype=np.float32)
        self.episode_start = np.zeros(self.capacity, dtype=np.int64)
        self.episode_end = np.full(self.capacity, _OPEN, dtype=np.int64)
        self.next_index = 0  # global index of the next slot to write
        self._current_start = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.next_index, self.capacity)

    @property
    def bytes_per_transition(self) -> float:
        arrays = (self.frames, self.actions, self.rewards, self.discounts, self.episode_start, self.episode_end)
        return sum(a.nbytes for a in arrays) / self.capacity

    def add(self, frame: np.ndarray, action: np.ndarray | None, reward: float, discount: float,
            first: bool, last: bool) -> None:
        """Store one step; ``action`` is the one that led here (None on an episode's first step)."""
        g = self.next_index
        slot = g % self.capacity
        if first:
            self._current_start = g
        self.frames[slot] = frame
        self.actions[slot] = 0.0 if action is None else action
        self.rewards[slot] = reward
        self.discounts[slot] = discount
        self.episode_start[slot] = self._current_start
        self.episode_end[slot] = _OPEN
        if last:
            first_kept = max(self._current_start, g - self.capacity + 1)
            self.episode_end[np.arange(first_kept, g + 1) % self.capacity] = g
        self.next_index = g + 1

    def can_sample(self) -> bool:
        return self._valid(np.arange(self._low(), max(self._low(), self.next_index - 1))).any()

    def _low(self) -> int:
        # The oldest index whose whole frame stack is still in the ring.
        return max(0, self.next_index - self.capacity) + self.frame_stack - 1

    def _valid(self, g: np.ndarray) -> np.ndarray:
        end = self.episode_end[g % self.capacity]
        latest = self.next_index - 1
        return (g < end) & ((end != _OPEN) | (g + self.nstep <= latest))

    def sample_indices(self, batch_size: int) -> np.ndarray:
        low, high = self._low(), self.next_index - 1  # g in [low, high)
        if high <= low:
            raise RuntimeError("replay holds no complete transition yet")
        chosen = self.rng.integers(low, high, size=batch_size)
        bad = ~self._valid(chosen)
        for _ in range(1000):
            if not bad.any():
                return chosen
            chosen[bad] = self.rng.integers(low, high, size=int(bad.sum()))
            bad = ~self._valid(chosen)
        raise RuntimeError("replay holds no complete transition yet")

    def _stack(self, g: np.ndarray) -> np.ndarray:
        k = self.frame_stack
        if k == 1:
            return self.frames[g % self.capacity]
        start = self.episode_start[g % self.capacity]
        offsets = np.arange(-k + 1, 1)
        indices = np.maximum(g[:, None] + offsets[None, :], start[:, None])
        stacked = self.frames[indices % self.capacity]  # (B, k, C, H, W)
        return stacked.reshape(len(g), -1, *self.frames.shape[2:])

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        g = self.sample_indices(batch_size)
        return self.transitions(g)

    def transitions(self, g: np.ndarray) -> dict[str, np.ndarray]:
        """n-step transitions starting at global indices ``g`` (already known valid)."""
        end = self.episode_end[g % self.capacity]
        n_eff = np.minimum(self.nstep, end - g)  # end is _OPEN for a running episode
        steps = np.arange(1, self.nstep + 1)
        within = steps[None, :] <= n_eff[:, None]
        slots = (g[:, None] + np.minimum(steps[None, :], n_eff[:, None])) % self.capacity
        rewards = np.where(within, self.rewards[slots], 0.0)
        factors = np.where(within, self.discount * self.discounts[slots], 1.0)
        before = np.cumprod(np.concatenate([np.ones((len(g), 1)), factors[:, :-1]], axis=1), axis=1)
        return {
            "obs": self._stack(g),
            "action": self.actions[(g + 1) % self.capacity],
            "reward": (before * rewards).sum(axis=1, dtype=np.float64).astype(np.float32)[:, None],
            "discount": np.prod(factors, axis=1).astype(np.float32)[:, None],
            "next_obs": self._stack(g + n_eff),
        }

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        kept = len(self)
        return {
            "frames": self.frames[:kept], "actions": self.actions[:kept], "rewards": self.rewards[:kept],
            "discounts": self.discounts[:kept], "episode_start": self.episode_start[:kept],
            "episode_end": self.episode_end[:kept], "next_index": np.int64(self.next_index),
            "current_start": np.int64(self._current_start),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kept = len(state["rewards"])
        for name in ("frames", "actions", "rewards", "discounts", "episode_start", "episode_end"):
            getattr(self, name)[:kept] = state[name]
        self.next_index = int(state["next_index"])
        self._current_start = int(state["current_start"])
