"""Run one trial: ``python -m agent.train key=value ... out=DIR``.

``run_trial(config, out_dir, sinks)`` is the function the orchestrator calls;
the command line is a thin edge around it.  The trial directory gets
``config.yaml`` (fully resolved), ``metrics.csv`` (one row per log point),
``status.json`` and ``checkpoint/`` (resumed from automatically).
"""

from __future__ import annotations

import math
import random
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from agent import checkpoint
from agent import metrics as m
from agent.allocator import keep_freed_memory
from agent.config import EVAL_SEED_OFFSET, ConfigError, TrialConfig, build_config, check_packable, help_text
from agent.drqv2 import DrQV2Agent, UpdateResult, nonfinite_members
from agent.interrupts import Interrupted, interrupt_once
from agent.replay import ReplayBuffer
from agent.sinks import DiskSink, MetricSink, sync_before_checkpoint, write_config
from agent.store import (
    COMPLETED,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    RUNNING,
    ForeignTrialDir,
    StoreWriteError,
    TrialStatus,
    check_trial_dir_owner,
    checkpoint_owner,
    read_regular_text,
    read_status,
    write_status,
)
from agent.yamlio import MAX_YAML_BYTES, YamlError, load_yaml
from envs import Env, Step, make_env
from envs.render_device import select_render_device


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Member:
    """One trial of a pack: everything that is not the shared networks (issue #9, item 2)."""

    config: TrialConfig
    out_dir: Path
    sinks: Sequence[MetricSink]
    env: Env
    eval_env: Env
    replay: ReplayBuffer
    coverage: m.Coverage
    next_checkpoint_frame: float
    pending: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # since the last log row
    time_step: Step | None = None
    episode_return: float = 0.0
    episode_length: int = 0
    ended_as: TrialStatus | None = None  # set when the member ends early: state, error, frame (and traceback)
    # (mean, std) of each Q-bias measurement since the last evaluation row (q_bias_every_frames > 0)
    q_bias_pending: list[tuple[float, float]] = field(default_factory=list)
    # The thread this member's environments always run on (env_threads > 1), else None: the caller's.
    # dm_control keeps an EGL context current on the thread that first rendered with it.
    thread: ThreadPoolExecutor | None = None

    @property
    def current_step(self) -> Step:
        """The latest time step of the member's environment (set by its first reset)."""
        assert self.time_step is not None, "the member's environment was never reset"
        return self.time_step

    def run(self, fn: Callable[..., Any], *args: Any) -> Future[Any] | Any:
        """``fn(*args)`` on this member's thread (a Future), or right here (the result)."""
        return self.thread.submit(fn, *args) if self.thread is not None else fn(*args)


class Trainer:
    """The DrQ-v2 interaction loop (DrQ-v2's train.py, without Hydra or per-episode files), for a pack.

    All members step in lockstep: one batched ``act`` and one batched ``update``
    per agent step, each member with its own environments, replay, coverage and
    sinks. A member that diverges or fails leaves the pack; the others go on.
    """

    def __init__(self, configs: Sequence[TrialConfig], out_dirs: Sequence[Path], sinks: Sequence[Sequence[MetricSink]]):
        check_packable(configs)
        self.config = c = configs[0]  # the keys every member shares (schedules, sizes, budgets)
        if c.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={c.device!r}: CUDA is not available on this machine; use device=cpu")
        self.device = torch.device(c.device)
        if self.device.type == "cuda" and c.obs_type == "pixels":
            select_render_device(self.device.index or 0)  # render where the learner runs
        if c.precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Nothing a member computes draws from the global generators (each member has its own
        # streams); seeding them keeps any library that does use them reproducible.
        random.seed(c.seed)
        np.random.seed(c.seed)
        torch.manual_seed(c.seed)
        self.members = [
            self._member(config, Path(out), list(member_sinks))
            for config, out, member_sinks in zip(configs, out_dirs, sinks)
        ]
        env = self.members[0].env
        self.agent = DrQV2Agent([mb.config for mb in self.members], env.obs_shape, env.action_dim, self.device)
        self.ended: list[Member] = []  # members that left the pack early, in the order they left
        # Members' environments and replays are independent: on a many-core GPU box they step and
        # sample in parallel (MuJoCo, rendering, numpy copies and lz4 release the GIL). Member i
        # always runs on thread i % env_threads: a rendering context may not move between threads.
        workers = min(c.env_threads, len(self.members))
        self.threads = (
            [ThreadPoolExecutor(1, thread_name_prefix=f"member{i}") for i in range(workers)] if workers > 1 else []
        )
        for i, member in enumerate(self.members):
            member.thread = self.threads[i % workers] if self.threads else None
        self.step = 0  # agent steps; frames = step * action_repeat
        self.next_log_frame = c.log_every_frames
        self.next_eval_frame = 0
        self.next_q_bias_frame = c.q_bias_every_frames  # only used when q_bias_every_frames > 0
        self.interval_start = (time.perf_counter(), 0)  # (time, frame) at the last log row

    def _member(self, config: TrialConfig, out_dir: Path, sinks: list[MetricSink]) -> Member:
        c = config
        env = make_env(c.task, c.obs_type, c.seed, c.action_repeat, c.frame_stack)
        eval_env = make_env(c.task, c.obs_type, c.seed + EVAL_SEED_OFFSET, c.action_repeat, c.frame_stack)
        agent_steps = math.ceil(c.num_frames / c.action_repeat)
        # Never allocate more slots than the trial can fill: 1M pixel slots are 21 GB.
        capacity = min(c.replay_capacity, agent_steps + 2 * c.frame_stack + 2)
        frame_dtype = np.uint8 if c.obs_type == "pixels" else np.float32
        replay = ReplayBuffer(
            capacity,
            env.frame_shape,
            frame_dtype,
            env.frame_stack,
            env.action_dim,
            c.nstep,
            c.discount,
            seed=c.seed,
            frame_codec=c.frame_codec,
        )
        projection = m.projection_matrix(c.task, env.state_dim + env.action_dim, c.coverage_dims)
        return Member(
            config,
            out_dir,
            sinks,
            env,
            eval_env,
            replay,
            m.Coverage(projection, c.coverage_cell_size),
            next_checkpoint_frame=c.checkpoint_every_frames or math.inf,
        )

    @property
    def frame(self) -> int:
        return self.step * self.config.action_repeat

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        c = self.config
        self.for_members(self._reset, list(self.members))
        while self.frame < c.num_frames and self.members:
            ended = [member for member in self.members if member.current_step.last]
            # Evaluations of this frame before its checkpoints (issue #11): a trial resumed from one then
            # neither repeats nor loses an evaluation row (metrics.csv is truncated to the checkpoint frame).
            if c.eval_every_frames and self.frame >= self.next_eval_frame:
                self.evaluate()
                self.next_eval_frame += c.eval_every_frames
            if c.q_bias_every_frames and self.frame >= self.next_q_bias_frame:
                if self.frame > c.num_seed_frames:  # as the authors', once updates have begun
                    self.measure_q_bias()
                self.next_q_bias_frame += c.q_bias_every_frames
            # Checkpoints in turn, here: their sinks (Ray Tune) expect the trial's own thread.
            self.for_members(
                self.save_checkpoint,
                [mb for mb in ended if self.frame >= mb.next_checkpoint_frame],
                on_member_thread=False,
            )
            self.for_members(self._reset, [member for member in ended if member in self.members])
            observations = np.stack([member.current_step.obs for member in self.members])
            actions = self.agent.act(observations, self.step, eval_mode=False)
            update = None
            if self.frame >= c.num_seed_frames and self.step % c.update_every_steps == 0:
                update = self.learn()
            update_frame = self.frame
            self.for_members(self._env_step, list(self.members), actions)
            if update is not None:
                # Read after the environment steps: on a GPU the update ran meanwhile.
                self.record_update(update, update_frame)
            self.step += 1
            if self.frame >= self.next_log_frame:
                self.log_training()
                self.next_log_frame += c.log_every_frames
        if any(member.pending for member in self.members):
            self.log_training()
        if c.eval_every_frames and self.members:
            self.evaluate()  # the final evaluation, at num_frames

    def _reset(self, member: Member) -> None:
        member.time_step = member.env.reset()
        member.replay.add(member.time_step.frame, None, 0.0, 1.0, first=True, last=False)
        member.episode_return, member.episode_length = 0.0, 0

    def _env_step(self, member: Member, action: np.ndarray) -> None:
        member.coverage.add(member.current_step.state, action)
        time_step = member.time_step = member.env.step(action)
        member.replay.add(
            time_step.frame, action, time_step.reward, time_step.discount, first=False, last=time_step.last
        )
        member.episode_return += time_step.reward
        member.episode_length += 1
        if time_step.last:
            member.pending[m.TRAIN_RETURN].append(member.episode_return)
            member.pending[m.TRAIN_LENGTH].append(member.episode_length * member.config.action_repeat)  # frames

    def for_members(
        self,
        fn: Callable[..., Any],
        members: Sequence[Member],
        *per_member: Sequence[Any] | np.ndarray,
        on_member_thread: bool = True,
    ) -> None:
        """``fn(member, *args)`` for each member, each on its own thread (in parallel) unless told otherwise.

        An exception there ends that member (failed), not the pack.
        """
        calls = [(member, *(args[i] for args in per_member)) for i, member in enumerate(members)]
        if on_member_thread:
            pending = [call[0].run(_capture, fn, *call) for call in calls]  # all submitted, then awaited
            outcomes = [_result(outcome) for outcome in pending]
        else:
            outcomes = [_capture(fn, *call) for call in calls]
        for (member, *_), failure in zip(calls, outcomes):
            if failure is not None:
                self.end_members([member], FAILED, *failure)

    def map_members(self, fn: Callable[..., Any], members: Sequence[Member], *per_member: Sequence[Any]) -> list:
        """``fn(member, *args)`` for each member on its own thread; results in order, exceptions raised."""
        pending = [member.run(fn, member, *(args[i] for args in per_member)) for i, member in enumerate(members)]
        return [_result(outcome) for outcome in pending]

    def _guarded(self, member: Member, fn: Callable[..., Any], *args: Any) -> None:
        self.for_members(lambda _member: fn(*args), [member], on_member_thread=False)

    def learn(self) -> tuple[UpdateResult, list[Member]] | None:
        rows = self.config.replay_rows_per_update
        try:
            batches = self.map_members(lambda member: member.replay.sample(rows), self.members)
        except RuntimeError:
            return None  # no complete n-step transition yet (only with tiny seed phases)
        # One member: a view (np.stack would copy a 16 MB pixel batch on every update).
        batch = (
            {key: value[None] for key, value in batches[0].items()}
            if len(batches) == 1
            else {key: np.stack([b[key] for b in batches]) for key in batches[0]}
        )
        return self.agent.update(batch, self.step), list(self.members)

    def record_update(self, update: tuple[UpdateResult, list[Member]], frame: int) -> None:
        """Append one update's metrics to each member's window; members with non-finite values diverged."""
        result, members = update  # the members in the agent's order when the update ran
        values = result.read()
        bad = set(nonfinite_members(values))
        for k, member in enumerate(members):
            if member not in self.members:
                continue  # it left the pack (failed) after the update ran
            if k in bad:
                shown = {key: float(column[k]) for key, column in values.items() if not np.isfinite(column[k])}
                self.end_members([member], "diverged", f"non-finite values: {shown}", frame=frame)
                continue
            for key, column in values.items():
                member.pending[key].append(float(column[k]))

    def end_members(
        self,
        ending: Sequence[Member],
        status: str,
        error: str,
        trace: str | None = None,
        frame: int | None = None,
    ) -> None:
        """Take members out of the pack with a final status (at ``frame``, else the pack's); the agent is rebuilt
        without them."""
        ending = [member for member in ending if member in self.members]
        if not ending:
            return
        for member in ending:
            member.ended_as = TrialStatus(
                status, frame=self.frame if frame is None else frame, error=error, traceback=trace or None
            )
            self.ended.append(member)
        old_members = self.members
        self.members = [member for member in self.members if member not in ending]
        if self.members:
            keep = [old_members.index(member) for member in self.members]
            states = [self.agent.member_state_dict(k) for k in keep]
            env = self.members[0].env
            self.agent = DrQV2Agent([mb.config for mb in self.members], env.obs_shape, env.action_dim, self.device)
            for k, state in enumerate(states):
                self.agent.load_member_state_dict(k, state)

    def log_training(self) -> None:
        now, frame = time.perf_counter(), self.frame
        elapsed = now - self.interval_start[0]
        for member in list(self.members):
            row = {key: float(np.mean(values)) for key, values in member.pending.items() if values}
            row[m.COVERAGE] = float(len(member.coverage))
            if elapsed > 0 and frame > self.interval_start[1]:
                row[m.FPS] = (frame - self.interval_start[1]) / elapsed  # this member's frames per second
            self._guarded(member, self.emit, member, frame, row)
            member.pending.clear()
        self.interval_start = (time.perf_counter(), frame)

    def emit(self, member: Member, frame: int, row: Mapping[str, float]) -> None:
        for sink in member.sinks:
            sink.log(frame, row)

    @torch.no_grad()
    def evaluate(self) -> None:
        """Deterministic episodes, all members in lockstep. The Q-bias comes from their first q_bias_max_states
        states, or (q_bias_every_frames > 0) is the mean of the measurements since the previous evaluation."""
        c = self.config
        start = time.perf_counter()
        members = list(self.members)
        measure_here = not c.q_bias_every_frames
        returns, samples = self._rollouts(
            members, c.num_eval_episodes, c.q_bias_max_states if measure_here else 0, stop_when_sampled=False
        )
        biases = (
            self._q_biases(members, samples) if measure_here else [_interval_mean(mb.q_bias_pending) for mb in members]
        )
        for k, member in enumerate(members):
            row = {m.EVAL_RETURN: float(np.mean(returns[k]))} if returns[k] else {}
            bias = biases[k]
            if bias is not None:
                row[m.Q_BIAS_MEAN], row[m.Q_BIAS_STD] = bias
            row[m.COVERAGE] = float(len(member.coverage))
            member.q_bias_pending.clear()
            self._guarded(member, self.emit, member, self.frame, row)
        # Evaluation time is not training time: keep it out of perf/fps.
        self.interval_start = (self.interval_start[0] + time.perf_counter() - start, self.interval_start[1])

    @torch.no_grad()
    def measure_q_bias(self) -> None:
        """One Q-bias measurement of its own (q_bias_every_frames > 0), kept until the next evaluation row:
        up to q_bias_episodes deterministic episodes, no more than q_bias_max_states states need."""
        c = self.config
        start = time.perf_counter()
        members = list(self.members)
        _, samples = self._rollouts(members, c.q_bias_episodes, c.q_bias_max_states, stop_when_sampled=True)
        for member, bias in zip(members, self._q_biases(members, samples)):
            if bias is not None:
                member.q_bias_pending.append(bias)
        self.interval_start = (self.interval_start[0] + time.perf_counter() - start, self.interval_start[1])

    def _rollouts(
        self, members: Sequence[Member], episodes: int, q_states: int, stop_when_sampled: bool
    ) -> tuple[list[list[float]], QSamples]:
        """Deterministic episodes of every member's evaluation environment in lockstep: each member's episode
        returns, and its first ``q_states`` (state, action, discounted return-to-go) triples.
        ``stop_when_sampled``: start no episode once every member has its ``q_states``."""
        c = self.config
        returns: list[list[float]] = [[] for _ in members]
        samples = QSamples([[] for _ in members], [[] for _ in members], [[] for _ in members])
        for _ in range(episodes):
            if stop_when_sampled and all(len(o) >= q_states for o in samples.obs):
                break
            steps = self.map_members(lambda member: member.eval_env.reset(), members)
            rewards: list[list[float]] = [[] for _ in members]
            while not all(step.last for step in steps):
                actions = self.agent.act(np.stack([step.obs for step in steps]), self.step, eval_mode=True)
                running = [k for k in range(len(members)) if not steps[k].last]  # the others wait
                for k in running:
                    if len(samples.obs[k]) < q_states:
                        samples.obs[k].append(steps[k].obs)
                        samples.actions[k].append(actions[k])
                stepped = self.map_members(
                    lambda member, action: member.eval_env.step(action),
                    [members[k] for k in running],
                    [actions[k] for k in running],
                )
                for k, step in zip(running, stepped):
                    steps[k] = step
                    rewards[k].append(step.reward)
            for k in range(len(members)):
                returns[k].append(float(np.sum(rewards[k])))
                needed = len(samples.obs[k]) - len(samples.mc_returns[k])
                if needed:
                    samples.mc_returns[k].extend(m.discounted_returns(np.asarray(rewards[k]), c.discount)[:needed])
        return returns, samples

    def _q_biases(self, members: Sequence[Member], samples: QSamples) -> list[tuple[float, float] | None]:
        """Each member's (mean, std) relative Q-bias over its samples (method.md §7), or None where there is none."""
        if not all(samples.obs):
            return [None] * len(members)
        seeds = None
        if self.config.q_bias_augment:
            # Shifts from a stream of their own, fixed by (seed, step): training's streams are untouched and a
            # resumed trial draws the same shifts.
            seeds = [
                int(np.random.SeedSequence([member.config.seed, self.step]).generate_state(1)[0]) for member in members
            ]
        q_values = self.agent.q_values(
            [np.stack(o) for o in samples.obs], [np.stack(a) for a in samples.actions], augment_seeds=seeds
        )
        return [m.q_bias(q, np.asarray(g)) if q is not None else None for q, g in zip(q_values, samples.mc_returns)]

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, member: Member) -> None:
        """One member's checkpoint, written at its episode end, so resuming starts with a reset exactly
        as the uninterrupted run. The format is a single trial's: a pack never changes what is on disk."""
        c = member.config
        k = self.members.index(member)
        state: dict[str, Any] = {
            "frame": self.frame,
            "step": self.step,
            "next_log_frame": self.next_log_frame,
            "next_eval_frame": self.next_eval_frame,
            "next_checkpoint_frame": member.next_checkpoint_frame + c.checkpoint_every_frames,
            "pending": dict(member.pending),
            "agent": self.agent.member_state_dict(k),
            "next_q_bias_frame": self.next_q_bias_frame,
            "q_bias_pending": list(member.q_bias_pending),
            "coverage": member.coverage.state_dict(),
            "rng": {
                "replay": member.replay.rng.bit_generator.state,
                "env": member.env.get_rng_state(),
                "eval_env": member.eval_env.get_rng_state(),
            },
            "replay": member.replay.state_dict() if c.checkpoint_replay else None,
        }
        sync_before_checkpoint(member.sinks)  # the metrics are never older than a checkpoint on disk (#19)
        try:
            # the latest and the previous checkpoint are kept, each with its size and hash (agent.checkpoint)
            final = checkpoint.save(member.out_dir, state, self.frame, self.step, owner=checkpoint_owner(c.to_dict()))
        except OSError as err:
            raise StoreWriteError(
                err, member.out_dir / checkpoint.PARTIAL, f"the checkpoint of frame {self.frame}"
            ) from err
        member.next_checkpoint_frame = state["next_checkpoint_frame"]
        for sink in member.sinks:
            sink.checkpoint(self.frame, final)

    def load_checkpoints(self, states: Sequence[dict[str, Any]]) -> None:
        """Resume every member from its own checkpoint; all of them were written at the same step."""
        steps = {state["step"] for state in states}
        if len(steps) != 1:
            raise ValueError(f"pack members resume from different steps {sorted(steps)}: run them as separate packs")
        first = states[0]
        self.step = first["step"]
        self.next_log_frame, self.next_eval_frame = first["next_log_frame"], first["next_eval_frame"]
        self.next_q_bias_frame = first.get("next_q_bias_frame", self.next_q_bias_frame)  # absent: older checkpoint
        for k, (member, state) in enumerate(zip(self.members, states)):
            member.next_checkpoint_frame = state["next_checkpoint_frame"]
            member.pending = defaultdict(list, state["pending"])
            member.q_bias_pending = [tuple(bias) for bias in state.get("q_bias_pending", [])]
            self.agent.load_member_state_dict(k, state["agent"])
            member.coverage.load_state_dict(state["coverage"])
            if state["replay"] is not None:
                member.replay.load_state_dict(state["replay"])
            rng = state["rng"]
            member.replay.rng.bit_generator.state = rng["replay"]
            member.env.set_rng_state(rng["env"])
            member.eval_env.set_rng_state(rng["eval_env"])

    def close(self) -> None:
        for member in [*self.members, *self.ended]:
            _result(member.run(_close_envs, member))
        for thread in self.threads:
            thread.shutdown()


class QSamples(NamedTuple):
    """Per member, the Q-bias samples of some rollouts: states, actions and discounted returns-to-go."""

    obs: list[list[np.ndarray]]
    actions: list[list[np.ndarray]]
    mc_returns: list[list[float]]


def _interval_mean(biases: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """The mean of the (mean, std) pairs measured over an evaluation interval, each averaged on its own (the
    authors' train.py averages est_bias_mean and est_bias_std so); None when nothing was measured."""
    if not biases:
        return None
    means, stds = zip(*biases)
    return float(np.mean(means)), float(np.mean(stds))


def _result(outcome: Future[Any] | Any) -> Any:
    return outcome.result() if isinstance(outcome, Future) else outcome


def _close_envs(member: Member) -> None:
    member.env.close()
    member.eval_env.close()


def _capture(fn: Callable[..., Any], *args: Any) -> tuple[str, str] | None:
    """Run ``fn``; None, or (error line, traceback) when it raised.  A store that refuses writes is the
    pack's fault, not the member's: ``StoreWriteError`` goes up and interrupts the pack."""
    try:
        fn(*args)
    except StoreWriteError:
        raise
    except Exception as err:  # noqa: BLE001 - a crashed member is a result too; the pack goes on
        return f"{type(err).__name__}: {err}", traceback.format_exc()
    return None


def run_trial(
    config: TrialConfig,
    out_dir: Path | str,
    sinks: Sequence[MetricSink] = (),
    on_status: Callable[[TrialStatus], None] | None = None,
) -> TrialStatus:
    """Train one trial into ``out_dir`` (resuming from its checkpoint if there is one) and return its status:
    a pack of one member."""
    callback = (lambda _k, status: on_status(status)) if on_status else None
    return run_pack([config], [out_dir], [sinks], callback)[0]


def run_pack(
    configs: Sequence[TrialConfig],
    out_dirs: Sequence[Path | str],
    sinks: Sequence[Sequence[MetricSink]] | None = None,
    on_status: Callable[[int, TrialStatus], None] | None = None,
) -> list[TrialStatus]:
    """Train ``configs`` as one pack (issue #9); member k writes a single trial's files into ``out_dirs[k]``.

    Each member resumes from its own checkpoint. Members whose checkpoints are at
    different steps run as separate packs, one after another. Never raises for a
    member that diverges or crashes: that is recorded in its ``status.json``
    (``diverged``/``failed``) with every metric logged so far kept, and the
    other members go on. Returns each member's final status, in order.
    """
    configs, dirs = list(configs), [Path(d) for d in out_dirs]
    sink_lists: list[list[MetricSink]] = [list(s) for s in sinks] if sinks is not None else [[] for _ in configs]
    if not len(configs) == len(dirs) == len(sink_lists):
        raise ValueError("run_pack needs one out_dir and one sink list per config")
    check_packable(configs)
    if configs[0].torch_threads:
        torch.set_num_threads(configs[0].torch_threads)
    keep_freed_memory()  # process-wide; without it every pixel update runs on freshly faulted pages
    for config, out_dir in zip(configs, dirs):  # before anything is written: never adopt another trial's results
        check_trial_dir_owner(out_dir, config.to_dict())
    loaded = [checkpoint.load_latest(d, checkpoint_owner(c.to_dict())) for c, d in zip(configs, dirs)]
    for found in loaded:
        for note in found.notes:
            print(f"checkpoint: {note}", file=sys.stderr, flush=True)
    by_step: dict[int, list[int]] = defaultdict(list)
    for k, found in enumerate(loaded):
        by_step[found.state["step"] if found.state else -1].append(k)
    statuses: dict[int, TrialStatus] = {}
    for members in by_step.values():
        results = _run_members(
            [configs[k] for k in members],
            [dirs[k] for k in members],
            [sink_lists[k] for k in members],
            [loaded[k] for k in members],
        )
        for k, status in zip(members, results):
            statuses[k] = status
            if on_status:
                on_status(k, status)
    return [statuses[k] for k in range(len(configs))]


def _run_members(
    configs: list[TrialConfig], out_dirs: list[Path], sinks: list[list[MetricSink]], loaded: list[checkpoint.Loaded]
) -> list[TrialStatus]:
    """One pack whose members all start (or resume) at the same step."""
    started = time.perf_counter()
    statuses: list[TrialStatus] = []
    all_sinks: list[list[MetricSink]] = []
    for config, out_dir, member_sinks, found in zip(configs, out_dirs, sinks, loaded):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_config(out_dir, config.to_dict())
        previous = read_status(out_dir)
        state = found.state
        frame = state["frame"] if state else 0
        started_at = _now()
        # every checkpoint fallback of the trial's life, oldest first (the sweep summary prints new ones)
        fallbacks = (previous.checkpoint_fallbacks if previous else ()) + tuple(
            {"at": started_at, "resumed_from_frame": frame, "note": note} for note in found.notes
        )
        status = TrialStatus(
            RUNNING,
            frame=frame,
            num_frames=config.num_frames,
            wall_time_s=(previous.wall_time_s or 0.0) if state and previous else 0.0,
            started_at=started_at,
            resumed_from_frame=frame if state else None,
            pack_size=len(configs),
            checkpoint_fallbacks=fallbacks,
        )
        write_status(out_dir, status)
        statuses.append(status)
        all_sinks.append([DiskSink(out_dir, resume_frame=frame if state else None), *member_sinks])
    trainer = None
    pack_error: dict[str, Any] | None = None  # TrialStatus fields: how the whole pack ended
    finished = False
    try:
        trainer = Trainer(configs, out_dirs, all_sinks)
        if all(found.state for found in loaded):
            states = [found.state for found in loaded if found.state is not None]
            checkpoint.apply_or_set_aside(lambda: trainer.load_checkpoints(states), out_dirs)
        trainer.run()
        finished = True
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C, or Ray ending the trial (SystemExit out of tune.report): resumable from the checkpoints
        pack_error = {"state": INTERRUPTED, "error": "stopped from outside"}
        raise
    except StoreWriteError as err:  # a full or read-only store: not the trial's fault, a rerun resumes it
        pack_error = {"state": INTERRUPTED, "error": str(err), "store_error": True}
    except Exception as err:  # a crashed pack is a result too; the sweep goes on
        pack_error = {"state": FAILED, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    finally:
        ended = {member.out_dir: member for member in trainer.ended} if trainer else {}
        for k, out_dir in enumerate(out_dirs):
            member, status = ended.get(out_dir), statuses[k]
            if member is not None and member.ended_as is not None:
                end = member.ended_as
                statuses[k] = replace(
                    status, state=end.state, frame=end.frame, error=end.error, traceback=end.traceback
                )
            elif pack_error is not None:
                end_frame = trainer.frame if trainer is not None else status.frame
                statuses[k] = replace(status, **pack_error, frame=end_frame)
            elif finished:
                statuses[k] = replace(status, state=COMPLETED, frame=trainer.frame if trainer else status.frame)
        if trainer is not None:
            trainer.close()
        elapsed = time.perf_counter() - started
        for k, (out_dir, member_sinks) in enumerate(zip(out_dirs, all_sinks)):
            status = statuses[k]
            if status.state == INTERRUPTED:  # metrics.csv holds rows to "frame"; a rerun resumes from here
                status = replace(status, checkpoint_frame=checkpoint.frame_of(out_dir) or 0)
            elif status.state in FINISHED_STATUSES:
                checkpoint.prune_finished(out_dir, keep_replay=configs[k].keep_replay)
            status = replace(status, wall_time_s=(status.wall_time_s or 0.0) + elapsed, finished_at=_now())
            try:
                write_status(out_dir, status)
            except StoreWriteError as err:  # the store is full: the caller reports the error of the pack
                print(f"error: {err}", file=sys.stderr)
                status = replace(status, store_error=True)
            statuses[k] = status
            for sink in member_sinks:
                try:
                    sink.close(status)
                except Exception as err:  # a broken view (W&B) never costs the disk results
                    print(f"warning: sink {type(sink).__name__} failed to close: {err}", file=sys.stderr)
    return statuses


def _config_file(value: str) -> dict[str, Any]:
    """The overrides of ``config=FILE``: a YAML mapping, read with bounds and repeated keys refused."""
    try:
        loaded = load_yaml(read_regular_text(value, MAX_YAML_BYTES), f"config={value}") or {}
    except FileNotFoundError:
        raise ConfigError(f"config={value}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config={value}: not a text file") from None
    except OSError as err:
        raise ConfigError(f"config={value}: cannot be read ({err.strerror or err})") from None
    except YamlError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config={value}: expected a mapping of config keys, got a {type(loaded).__name__}")
    return loaded


def parse_cli(argv: Sequence[str]) -> tuple[dict[str, Any], Path | None]:
    overrides: dict[str, Any] = {}
    out: Path | None = None
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r}: expected key=value (see --help)")
        key, value = arg.split("=", 1)
        if key == "out":
            out = Path(value)
        elif key == "config":
            overrides.update(_config_file(value))
        else:
            try:
                overrides[key] = load_yaml(value, f"{key}={value[:80]}") if value else value
            except YamlError as err:
                raise ConfigError(f"{err} (a value is read as YAML: quote a string, e.g. {key}=\"'...'\")") from None
    return overrides, out


def _resume_line(out: Path) -> str:
    status = read_status(out)
    state = status.state if status is not None else "no status"
    frame = checkpoint.frame_of(out)
    where = f"its checkpoint at frame {frame}" if frame is not None else "frame 0 (no checkpoint yet)"
    return f"{out} is {state}; run the same command again to resume from {where}"


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m agent.train") -> int:
    """``prog``: the program name in the usage line (``bnsweep train`` through the bnsweep command)."""
    with interrupt_once():  # Ctrl-C and SIGTERM: the trial ends interrupted, in one line (never a traceback)
        return _main(list(sys.argv[1:] if argv is None else argv), prog)


def _main(argv: list[str], prog: str) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {prog} [key=value ...] [config=overrides.yaml] [out=DIR]\n")
        print("  out = runs/<task>-<obs_type>-seed<seed>   trial directory (resumes from its checkpoint)\n")
        print(help_text())
        return 0
    try:
        overrides, out = parse_cli(argv)
        config = build_config(overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = out or Path("runs") / f"{config.task}-{config.obs_type}-seed{config.seed}"
    try:
        status = run_trial(config, out)
    except ForeignTrialDir as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"interrupted ({stop}): {_resume_line(out)}", file=sys.stderr)
        return stop.exit_code
    print(f"{status.state}: {status.frame} frames in {status.wall_time_s or 0.0:.0f} s -> {out}")
    if status.state == FAILED:
        print(status.traceback or status.error or "", file=sys.stderr)
    elif status.state == INTERRUPTED:
        print(f"error: {status.error}; run the same command again to resume", file=sys.stderr)
    return 0 if status.state in FINISHED_STATUSES else 1


if __name__ == "__main__":
    sys.exit(main())
