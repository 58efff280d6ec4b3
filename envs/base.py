"""The interface every environment backend implements."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

IMAGE_SIZE = 84  # DrQ-v2's camera images: 84 x 84 RGB


def pixel_frame_shape(image_size: int = IMAGE_SIZE) -> tuple[int, int, int]:
    """One rendered frame, channels first: (3, image_size, image_size)."""
    return (3, image_size, image_size)


@dataclass(frozen=True)
class ObservationLayout:
    """How an observation is made of frames: the replay stores ``frame_shape``, the networks see ``obs_shape``."""

    frame_shape: tuple[int, ...]
    frame_stack: int

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.frame_shape[0] * self.frame_stack, *self.frame_shape[1:])


def observation_layout(
    obs_type: str, state_dim: int, frame_stack: int, image_size: int = IMAGE_SIZE
) -> ObservationLayout:
    """Pixels: the last ``frame_stack`` rendered frames; states: the state vector alone (states are never stacked)."""
    if obs_type == "pixels":
        return ObservationLayout(pixel_frame_shape(image_size), frame_stack)
    return ObservationLayout((state_dim,), 1)


@dataclass
class Step:
    """One agent step (``action_repeat`` physics steps) as the agent and replay see it.

    ``obs`` is what the policy sees (stacked frames for pixels); ``frame`` is only
    the newest part of it, which is what the replay stores; ``state`` is the
    proprioceptive vector, available in pixel mode too (coverage, Q-bias).
    """

    obs: np.ndarray
    frame: np.ndarray
    state: np.ndarray
    reward: float  # summed over the repeated physics steps
    discount: float  # 0.0 when the episode terminated (not on time limits)
    first: bool
    last: bool


class Env:
    """What every backend sets at construction, from ``observation_layout``: frame_shape, frame_stack, obs_shape."""

    obs_shape: tuple[int, ...]
    frame_shape: tuple[int, ...]
    action_dim: int
    state_dim: int
    frame_stack: int
    action_repeat: int

    def reset(self) -> Step:
        raise NotImplementedError

    def step(self, action: np.ndarray) -> Step:
        raise NotImplementedError

    def get_rng_state(self) -> Any:
        raise NotImplementedError

    def set_rng_state(self, state: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FrameStacker:
    """Keeps the last k frames; at reset the first frame fills the stack (DrQ-v2 convention)."""

    def __init__(self, k: int):
        self.k = k
        self.frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        for _ in range(self.k):
            self.frames.append(frame)
        return self.obs()

    def push(self, frame: np.ndarray) -> np.ndarray:
        self.frames.append(frame)
        return self.obs()

    def obs(self) -> np.ndarray:
        return np.concatenate(list(self.frames), axis=0) if self.k > 1 else self.frames[-1]
