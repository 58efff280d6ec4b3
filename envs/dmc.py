"""dm_control suite tasks: pixels rendered headless, proprioceptive state always available."""

from __future__ import annotations

from typing import Any

import numpy as np
from dm_control import suite

from envs.base import IMAGE_SIZE, Env, FrameStacker, Step, observation_layout


def _flatten(observation: dict[str, Any]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in observation.values()])


class DMCEnv(Env):
    def __init__(
        self,
        domain: str,
        task: str,
        obs_type: str,
        seed: int,
        action_repeat: int,
        frame_stack: int,
        image_size: int = IMAGE_SIZE,
    ):
        self._env = suite.load(
            domain, task, task_kwargs={"random": seed}, environment_kwargs={"flat_observation": False}
        )
        self.obs_type = obs_type
        self.action_repeat = action_repeat
        self.image_size = image_size
        self.camera_id = 2 if domain == "quadruped" else 0  # DrQ-v2's camera choice
        spec = self._env.action_spec()
        self.action_dim = int(np.prod(spec.shape))
        self._low, self._high = spec.minimum.astype(np.float32), spec.maximum.astype(np.float32)
        self.state_dim = int(sum(np.prod(s.shape) for s in self._env.observation_spec().values()))
        layout = observation_layout(obs_type, self.state_dim, frame_stack, image_size)
        self.frame_shape, self.frame_stack, self.obs_shape = layout.frame_shape, layout.frame_stack, layout.obs_shape
        self._stack = FrameStacker(self.frame_stack)

    def _frame(self, state: np.ndarray) -> np.ndarray:
        if self.obs_type == "pixels":
            pixels = self._env.physics.render(self.image_size, self.image_size, camera_id=self.camera_id)
            return np.ascontiguousarray(pixels.transpose(2, 0, 1))
        return state

    def reset(self) -> Step:
        time_step = self._env.reset()
        state = _flatten(time_step.observation)
        frame = self._frame(state)
        return Step(self._stack.reset(frame), frame, state, 0.0, 1.0, True, False)

    def step(self, action: np.ndarray) -> Step:
        # Agent actions live in [-1, 1]; map them onto the task's bounds.
        scaled = self._low + (np.asarray(action, dtype=np.float32) + 1.0) * 0.5 * (self._high - self._low)
        reward, discount = 0.0, 1.0
        for _ in range(self.action_repeat):
            time_step = self._env.step(scaled)
            reward += time_step.reward or 0.0
            discount *= time_step.discount if time_step.discount is not None else 1.0
            if time_step.last():
                break
        state = _flatten(time_step.observation)
        frame = self._frame(state)
        return Step(self._stack.push(frame), frame, state, float(reward), float(discount), False, time_step.last())

    def get_rng_state(self) -> Any:
        return self._env.task.random.get_state()

    def set_rng_state(self, state: Any) -> None:
        self._env.task.random.set_state(state)

    def close(self) -> None:
        """Frees the rendering contexts now, on the calling thread: dm_control's EGL context stays current
        on the thread that rendered with it, so freeing it later (garbage collection) elsewhere fails."""
        self._env.physics.free()
        self._env.close()
