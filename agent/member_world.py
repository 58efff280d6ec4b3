"""The environment side of one pack member: what a member owns that is not the shared networks.

A ``MemberWorld`` holds a member's training and evaluation environments, its
replay, its coverage and the random streams of all three. The trainer drives it
through a handful of calls (reset, step, sample, evaluation steps, state), so
the same world can live in the trainer's process (``LocalWorld``, today's
default) or in a worker process of its own (``agent.member_process``, issue
#17), and the learning is the same either way: every random number a world
draws comes from its own streams, in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent import metrics as m
from agent.replay import FRAME_DTYPES, ReplayBuffer, replay_slots
from contract.config import EVAL_SEED_OFFSET, TrialConfig
from envs import Step, make_env


@dataclass(frozen=True)
class WorldSpec:
    """The shapes a trainer needs before it builds the networks and the shared buffers (all members agree)."""

    obs_shape: tuple[int, ...]
    obs_dtype: str
    action_dim: int
    # key -> (shape of one member's sampled batch, dtype): what ``MemberWorld.sample(rows)`` returns
    batch: dict[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class StepReport:
    """What the trainer learns from one training step: whether the episode ended, and if so its return and
    length in frames (for the train/ metrics)."""

    last: bool
    episode_return: float = 0.0
    episode_frames: int = 0
    # where the world's time went this step (the loop's timeline, bench.packed): its batch, its environment step
    sample_s: float = 0.0
    step_s: float = 0.0


class MemberWorld:
    """A member's environments, replay and coverage; every call is one member's and draws only its streams."""

    def __init__(self, config: TrialConfig):
        c = self.config = config
        self.env = make_env(c.task, c.obs_type, c.seed, c.action_repeat, c.frame_stack)
        self.eval_env = make_env(c.task, c.obs_type, c.seed + EVAL_SEED_OFFSET, c.action_repeat, c.frame_stack)
        self.replay = ReplayBuffer(
            replay_slots(c.replay_capacity, c.num_frames, c.action_repeat, c.frame_stack),
            self.env.frame_shape,
            FRAME_DTYPES[c.obs_type],
            self.env.frame_stack,
            self.env.action_dim,
            c.nstep,
            c.discount,
            seed=c.seed,
            frame_codec=c.frame_codec,
        )
        projection = m.projection_matrix(c.task, self.env.state_dim + self.env.action_dim, c.coverage_dims)
        # the state cells' reference: the uniform-random phase all methods share (method.md §7)
        self.coverage = m.Coverage(projection, c.coverage_cell_size, max(2, c.num_expl_steps))
        self.time_step: Step | None = None
        self.eval_obs: np.ndarray | None = None  # the evaluation environment's latest observation
        self.episode_return, self.episode_length = 0.0, 0
        self._sample_s = 0.0  # the last batch's sampling time, reported with the step after it

    def spec(self) -> WorldSpec:
        batch = self.replay.batch_spec(self.config.replay_rows_per_update)
        _, obs_dtype = batch["obs"]
        return WorldSpec(tuple(self.env.obs_shape), obs_dtype, self.env.action_dim, batch)

    # ------------------------------------------------------------ training
    @property
    def obs(self) -> np.ndarray:
        assert self.time_step is not None, "the member's environment was never reset"
        return self.time_step.obs

    @property
    def last(self) -> bool:
        return self.time_step is not None and self.time_step.last

    def reset(self) -> np.ndarray:
        self.time_step = self.env.reset()
        self.replay.add(self.time_step.frame, None, 0.0, 1.0, first=True, last=False)
        self.episode_return, self.episode_length = 0.0, 0
        return self.time_step.obs

    def step(self, action: np.ndarray) -> StepReport:
        assert self.time_step is not None, "the member's environment was never reset"
        start = time.perf_counter()
        self.coverage.add(self.time_step.state, action)
        time_step = self.time_step = self.env.step(action)
        self.replay.add(time_step.frame, action, time_step.reward, time_step.discount, first=False, last=time_step.last)
        self.episode_return += time_step.reward
        self.episode_length += 1
        sample_s, self._sample_s = self._sample_s, 0.0
        step_s = time.perf_counter() - start
        if time_step.last:
            frames = self.episode_length * self.config.action_repeat
            return StepReport(True, self.episode_return, frames, sample_s=sample_s, step_s=step_s)
        return StepReport(False, sample_s=sample_s, step_s=step_s)

    def sample(self, rows: int, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """``rows`` transitions (``RuntimeError`` while none is complete), written into ``out`` when given."""
        start = time.perf_counter()
        batch = self.replay.sample(rows)
        if out is not None:
            for key, value in batch.items():
                out[key][...] = value
            batch = out
        self._sample_s = time.perf_counter() - start
        return batch

    def coverage_values(self) -> dict[str, float]:
        """The coverage metrics of the training transitions so far (agent.metrics.Coverage.values)."""
        return self.coverage.values()

    # ------------------------------------------------------------ evaluation (its own environment and streams)
    def eval_reset(self) -> tuple[float, bool]:
        """(reward, last) of the evaluation episode's first step; its observation is ``eval_obs``."""
        return self._evaluated(self.eval_env.reset())

    def eval_step(self, action: np.ndarray) -> tuple[float, bool]:
        return self._evaluated(self.eval_env.step(action))

    def _evaluated(self, step: Step) -> tuple[float, bool]:
        self.eval_obs = step.obs
        return float(step.reward), bool(step.last)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Coverage, the three random streams and (``checkpoint_replay``) the replay: a checkpoint's world part."""
        return {
            "coverage": self.coverage.state_dict(),
            "rng": {
                "replay": self.replay.rng.bit_generator.state,
                "env": self.env.get_rng_state(),
                "eval_env": self.eval_env.get_rng_state(),
            },
            "replay": self.replay.state_dict() if self.config.checkpoint_replay else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coverage.load_state_dict(state["coverage"])
        if state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])
        rng = state["rng"]
        self.replay.rng.bit_generator.state = rng["replay"]
        self.env.set_rng_state(rng["env"])
        self.eval_env.set_rng_state(rng["eval_env"])

    def save_checkpoint(
        self, loop_state: dict[str, Any], out_dir: Path, frame: int, step: int, owner: dict[str, Any]
    ) -> Path:
        """The trainer's part of a checkpoint (agent, counters, windows) with this world's, written as one."""
        from agent import checkpoint  # torch, on the CPU: a worker process never touches CUDA

        record = checkpoint.TrialCheckpoint(**loop_state, **self.state_dict())
        return checkpoint.save(out_dir, record.to_state(), frame, step, owner=owner)

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


WORLD_KEYS = ("coverage", "rng", "replay")  # the keys of a checkpoint state that ``MemberWorld.state_dict`` owns


class Done:
    """A result that is already there (the in-process world without a thread of its own)."""

    def __init__(self, value: Any = None):
        self.value = value

    def result(self) -> Any:
        return self.value


class Deferred:
    """A call run when its result is first asked for: the in-process world's environment step, which waits
    until the update has run, as the loop always did."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        self.fn, self.args, self._done, self._value = fn, args, False, None

    def result(self) -> Any:
        if not self._done:
            self._value, self._done = self.fn(*self.args), True
        return self._value


class LocalWorld:
    """A member's world in the trainer's process: called right here, or on the member's own thread
    (``env_threads > 1``: dm_control keeps an EGL context current on the thread that first rendered with it).

    Every call returns something with ``result()``, as ``agent.member_process.WorkerWorld``'s do, so the trainer
    drives both the same way."""

    def __init__(self, config: TrialConfig, thread: ThreadPoolExecutor | None):
        self.thread = thread
        self.world: MemberWorld = self._call(MemberWorld, config).result()
        self.spec = self.world.spec()
        self._batch: dict[str, np.ndarray] | None = None

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.thread.submit(fn, *args) if self.thread is not None else Done(fn(*args))

    @property
    def obs(self) -> np.ndarray:
        return self.world.obs

    @property
    def eval_obs(self) -> np.ndarray:
        assert self.world.eval_obs is not None, "the member's evaluation environment was never reset"
        return self.world.eval_obs

    @property
    def last(self) -> bool:
        return self.world.last

    def batch(self) -> dict[str, np.ndarray]:
        assert self._batch is not None
        return self._batch

    def reset(self) -> Any:
        return self._call(self.world.reset)

    def _sample(self, rows: int) -> bool:
        try:
            self._batch = self.world.sample(rows)
        except RuntimeError:  # no complete n-step transition yet (only with tiny seed phases)
            self._batch = None
        return self._batch is not None

    def start_step(self, action: np.ndarray, rows: int) -> tuple[Any, Any]:
        sampled = self._call(self._sample, rows) if rows else None
        if self.thread is not None:
            return sampled, self.thread.submit(self.world.step, action)  # after the sample, on the same thread
        return sampled, Deferred(self.world.step, action)

    def coverage(self) -> Any:
        return self._call(self.world.coverage_values)

    def eval_reset(self) -> Any:
        return self._call(self.world.eval_reset)

    def eval_step(self, action: np.ndarray) -> Any:
        return self._call(self.world.eval_step, action)

    def load(self, state: dict[str, Any]) -> Any:
        return self._call(self.world.load_state_dict, state)

    def save_checkpoint(self, loop_state: dict[str, Any], out_dir: Path, frame: int, step: int, owner: Any) -> Any:
        return self._call(self.world.save_checkpoint, loop_state, out_dir, frame, step, owner)

    def close(self) -> None:
        self._call(self.world.close).result()
