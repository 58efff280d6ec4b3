"""Gymnasium MuJoCo tasks (``*-v5``) behind the same interface as dm_control."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium
import numpy as np

from envs.base import IMAGE_SIZE, Env, FrameStacker, Step, observation_layout


def _box(space: gymnasium.Space[Any], task: str, what: str) -> gymnasium.spaces.Box:
    """``space`` as the Box every MuJoCo task has (continuous vectors)."""
    if not isinstance(space, gymnasium.spaces.Box):
        raise TypeError(f"{task}: continuous {what} (a Box space) expected, got {space}")
    return space


class GymMujocoEnv(Env):
    def __init__(
        self, task: str, obs_type: str, seed: int, action_repeat: int, frame_stack: int, image_size: int = IMAGE_SIZE
    ):
        kwargs: dict[str, Any] = {}
        if obs_type == "pixels":
            kwargs = {"render_mode": "rgb_array", "width": image_size, "height": image_size}
        self._env = gymnasium.make(task, **kwargs)
        self._seed: int | None = seed  # Gymnasium seeds its RNG on the first reset only
        self.obs_type = obs_type
        self.action_repeat = action_repeat
        space = _box(self._env.action_space, task, "actions")
        self.action_dim = int(np.prod(space.shape))
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.state_dim = int(np.prod(_box(self._env.observation_space, task, "observations").shape))
        layout = observation_layout(obs_type, self.state_dim, frame_stack, image_size)
        self.frame_shape, self.frame_stack, self.obs_shape = layout.frame_shape, layout.frame_stack, layout.obs_shape
        self._stack = FrameStacker(self.frame_stack)

    def _frame(self, state: np.ndarray) -> np.ndarray:
        if self.obs_type == "pixels":
            image = self._env.render()
            assert isinstance(image, np.ndarray)  # render_mode="rgb_array": one (H, W, 3) array
            return np.ascontiguousarray(image.transpose(2, 0, 1))
        return state

    def reset(self) -> Step:
        observation, _ = self._env.reset(seed=self._seed)
        self._seed = None
        state = np.asarray(observation, dtype=np.float32)
        frame = self._frame(state)
        return Step(self._stack.reset(frame), frame, state, 0.0, 1.0, True, False)

    def step(self, action: np.ndarray) -> Step:
        scaled = self._low + (np.asarray(action, dtype=np.float32) + 1.0) * 0.5 * (self._high - self._low)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            observation, r, terminated, truncated, _ = self._env.step(scaled)
            reward += float(r)
            if terminated or truncated:
                break
        state = np.asarray(observation, dtype=np.float32)
        frame = self._frame(state)
        # Only a true termination cuts the bootstrap; a time limit does not.
        return Step(
            self._stack.push(frame),
            frame,
            state,
            reward,
            0.0 if terminated else 1.0,
            False,
            bool(terminated or truncated),
        )

    def get_rng_state(self) -> Any:
        return {"np_random": copy.deepcopy(self._env.unwrapped.np_random.bit_generator.state), "seed": self._seed}

    def set_rng_state(self, state: Any) -> None:
        self._seed = state["seed"]
        if self._seed is None:
            self._env.unwrapped.np_random.bit_generator.state = state["np_random"]

    def close(self) -> None:
        self._env.close()
