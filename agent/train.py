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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from agent import checkpoint
from agent import metrics as m
from agent.allocator import keep_freed_memory
from agent.drqv2 import DrQV2Agent, UpdateResult, nonfinite_members
from agent.interrupts import Interrupted, interrupt_once
from agent.member_process import WorkerError, WorkerPack, WorkerWorld
from agent.member_world import WORLD_KEYS, Done, LocalWorld, StepReport, WorldSpec
from agent.sinks import DiskSink, MetricSink, sync_before_checkpoint, write_config
from contract.config import ConfigError, TrialConfig, build_config, check_packable, help_text
from contract.store import (
    COMPLETED,
    DIVERGED,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    RUNNING,
    ForeignTrialDir,
    Status,
    StoreWriteError,
    TrialStatus,
    check_trial_dir_owner,
    checkpoint_owner,
    read_regular_text,
    read_status,
    write_status,
)
from contract.yamlio import MAX_YAML_BYTES, YamlError, load_yaml
from envs.render_device import select_render_device


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Member:
    """One trial of a pack: everything that is not the shared networks (issue #9, item 2). Its environments,
    replay and coverage are its ``world``: in this process (``LocalWorld``) or a worker's (``WorkerWorld``)."""

    config: TrialConfig
    out_dir: Path
    sinks: Sequence[MetricSink]
    world: LocalWorld | WorkerWorld
    next_checkpoint_frame: float
    pending: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # since the last log row
    ended_as: TrialStatus | None = None  # set when the member ends early: state, error, frame (and traceback)
    # (mean, std) of each Q-bias measurement since the last evaluation row (q_bias_every_frames > 0)
    q_bias_pending: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Timeline:
    """Where a loop's time goes, for benchmarks (``bench.packed``): set ``Trainer.timeline`` to one before
    ``run``. ``parts``: seconds of the training loop's own work and waits, summed over its cycles (one agent
    step each); the members' sampling and environment steps, as each member's world measured them (in a
    worker process they overlap the update)."""

    parts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cycles: int = 0
    sample_s: list[float] = field(default_factory=list)
    env_step_s: list[float] = field(default_factory=list)
    gpu_update_ms: list[float] = field(default_factory=list)  # CUDA events around each update (device time)

    def add(self, part: str, since: float) -> float:
        now = time.perf_counter()
        self.parts[part] += now - since
        return now


class Trainer:
    """The DrQ-v2 interaction loop (DrQ-v2's train.py, without Hydra or per-episode files), for a pack.

    All members step in lockstep: one batched ``act`` and one batched ``update``
    per agent step, each member with its own environments, replay, coverage and
    sinks. A member that diverges or fails leaves the pack; the others go on.
    Each step, every member samples its batch and then steps its environment;
    the update runs between the two, so with ``member_processes`` (each world in
    a worker process) the update overlaps the environment steps and the
    learning is the same as in one process.
    """

    def __init__(self, configs: Sequence[TrialConfig], out_dirs: Sequence[Path], sinks: Sequence[Sequence[MetricSink]]):
        check_packable(configs)
        self.config = c = configs[0]  # the keys every member shares (schedules, sizes, budgets)
        if c.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={c.device!r}: CUDA is not available on this machine; use device=cpu")
        self.device = torch.device(c.device)
        if self.device.type == "cuda" and c.obs_type == "pixels":
            select_render_device(self.device.index or 0)  # render where the learner runs (workers inherit it)
        if self.device.type == "cuda":
            # Pinned, whatever ran in this process before: PyTorch's defaults run cuDNN convolutions in TF32 even
            # under "fp32" (83% of the update's arithmetic), matmuls in fp32; tf32 moves the matmuls to TF32 too.
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cuda.matmul.allow_tf32 = c.precision == "tf32"
        # Nothing a member computes draws from the global generators (each member has its own
        # streams); seeding them keeps any library that does use them reproducible.
        random.seed(c.seed)
        np.random.seed(c.seed)
        torch.manual_seed(c.seed)
        self.threads: list[ThreadPoolExecutor] = []
        self.pack: WorkerPack | None = None
        self.pinned_batches = False
        worlds: Sequence[LocalWorld | WorkerWorld]
        if c.member_processes:
            # the actions the agent returns (float32, or float64 where a test asks for it) cross unrounded
            action_dtype = np.dtype(str(torch.get_default_dtype()).removeprefix("torch.")).str
            self.pack = WorkerPack(list(configs), action_dtype)
            worlds = self.pack.workers
            # the learner then copies batches to the GPU from the block the workers sampled into
            self.pinned_batches = self.device.type == "cuda" and self.pack.register_with_cuda()
        else:
            # Members' environments and replays are independent: they step and sample in parallel on threads
            # (MuJoCo, rendering, numpy copies and lz4 release the GIL). Member i always runs on thread
            # i % env_threads: a rendering context may not move between threads.
            workers = min(c.env_threads, len(configs))
            if workers > 1:
                self.threads = [ThreadPoolExecutor(1, thread_name_prefix=f"member{i}") for i in range(workers)]
            worlds = [
                LocalWorld(config, self.threads[i % workers] if self.threads else None)
                for i, config in enumerate(configs)
            ]
        spec = worlds[0].spec
        assert spec is not None  # a worker's, read when it started
        self.spec: WorldSpec = spec
        self.members = [
            Member(config, Path(out), list(member_sinks), world, config.checkpoint_every_frames or math.inf)
            for config, out, member_sinks, world in zip(configs, out_dirs, sinks, worlds)
        ]
        self.agent = DrQV2Agent(list(configs), self.spec.obs_shape, self.spec.action_dim, self.device)
        self.ended: list[Member] = []  # members that left the pack early, in the order they left
        self.step = 0  # agent steps; frames = step * action_repeat
        self.next_log_frame = c.log_every_frames
        self.next_eval_frame = 0
        self.next_q_bias_frame = c.q_bias_every_frames  # only used when q_bias_every_frames > 0
        self.interval_start = (time.perf_counter(), 0)  # (time, frame) at the last log row
        self.timeline: Timeline | None = None
        self._update_events: tuple[Any, Any] | None = None  # CUDA events around the last update (timeline)

    @property
    def frame(self) -> int:
        return self.step * self.config.action_repeat

    # ------------------------------------------------------------ the loop
    def run(self) -> None:
        c = self.config
        self.for_members(self._reset, list(self.members))
        while self.frame < c.num_frames and self.members:
            ended = [member for member in self.members if member.world.last]
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
            for member in [mb for mb in ended if self.frame >= mb.next_checkpoint_frame and mb in self.members]:
                self._guarded(member, self.save_checkpoint, member)
            self.for_members(self._reset, [member for member in ended if member in self.members])
            timeline, tick = self.timeline, time.perf_counter()
            actions = self.agent.act(self.observations(), self.step, eval_mode=False)
            updating = self.frame >= c.num_seed_frames and self.step % c.update_every_steps == 0
            rows = c.replay_rows_per_update if updating else 0
            # Each member samples (its replay as of this step), then steps with its action; the update runs
            # in between, while worker processes step their environments.
            members = list(self.members)
            started = self.for_members(self._start_step, members, actions, [rows] * len(members))
            live = [(mb, replies) for mb, replies in zip(members, started) if mb in self.members]
            if timeline:
                tick = timeline.add("act", tick)
            update = self.learn([mb for mb, _ in live], [sampled for _, (sampled, _) in live]) if rows else None
            if timeline:
                tick = time.perf_counter()  # learn() added its waits and its update
            update_frame = self.frame
            stepping = [(mb, step) for mb, (_, step) in live if mb in self.members]
            reports = self.for_members(self._finish_step, [mb for mb, _ in stepping], [step for _, step in stepping])
            if timeline:
                tick = timeline.add("wait_env_steps", tick)
                for report in reports:
                    if report is not None:
                        timeline.sample_s.append(report.sample_s)
                        timeline.env_step_s.append(report.step_s)
            if update is not None:
                # Read after the environment steps: on a GPU the update ran meanwhile.
                self.record_update(update, update_frame)
                if timeline:
                    tick = timeline.add("read_update", tick)
            if timeline:
                timeline.cycles += 1
            self.step += 1
            if self.frame >= self.next_log_frame:
                self.log_training()
                self.next_log_frame += c.log_every_frames
        if any(member.pending for member in self.members):
            self.log_training()
        if c.eval_every_frames and self.members:
            self.evaluate()  # the final evaluation, at num_frames

    @property
    def _whole_pack(self) -> bool:
        """No member has left: the shared block's rows are the agent's members, in its order."""
        return not self.ended

    def observations(self) -> np.ndarray:
        """(K, *obs_shape): every member's current observation."""
        if self.pack is not None and self._whole_pack:
            return self.pack.views["obs"]  # the shared block already holds them side by side
        return np.stack([member.world.obs for member in self.members])

    def _reset(self, member: Member) -> Any:
        return member.world.reset()

    def _start_step(self, member: Member, action: np.ndarray, rows: int) -> Done:
        return Done(member.world.start_step(action, rows))

    def _finish_step(self, member: Member, step: Any) -> Done:
        report: StepReport = step.result()
        if report.last:
            member.pending[m.TRAIN_RETURN].append(report.episode_return)
            member.pending[m.TRAIN_LENGTH].append(report.episode_frames)
        return Done(report)

    def for_members(self, call: Callable[..., Any], members: Sequence[Member], *per_member: Any) -> list[Any]:
        """``call(member, *args)`` for each member: each returns a pending result (a Future, a worker's reply),
        all are started, then awaited, so the members' worlds work in parallel. Returns the results in order.

        An exception there ends that member (failed; its result is None), not the pack."""
        pending: list[Any] = []
        for i, member in enumerate(members):
            pending.append(_capture(call, member, *(args[i] for args in per_member)))
        results: list[Any] = []
        for member, outcome in zip(members, pending):
            if isinstance(outcome, _Failure):
                result: Any = outcome
            else:
                result = _capture(outcome.result)
            if isinstance(result, _Failure):
                self.end_members([member], FAILED, result.line, result.trace)
                result = None
            results.append(result)
        return results

    def map_members(self, call: Callable[..., Any], members: Sequence[Member], *per_member: Sequence[Any]) -> list:
        """``call(member, *args)`` (a pending result) for each member, all started, then awaited; exceptions
        raised (an evaluation that fails ends the pack, as it always did)."""
        pending = [call(member, *(args[i] for args in per_member)) for i, member in enumerate(members)]
        return [outcome.result() for outcome in pending]

    def _guarded(self, member: Member, fn: Callable[..., Any], *args: Any) -> None:
        self.for_members(lambda _member: Done(fn(*args)), [member])

    def learn(self, members: Sequence[Member], sampled: Sequence[Any]) -> tuple[UpdateResult, list[Member]] | None:
        """One packed update from the batches ``members`` sampled (``sampled``: whether each could)."""
        tick = time.perf_counter()
        could = self.for_members(lambda _member, reply: reply, members, sampled)
        if self.timeline:
            self.timeline.add("wait_samples", tick)
        if any(ok is False for ok in could) or not self.members:  # None: that member failed and left
            return None  # no complete n-step transition yet (only with tiny seed phases)
        pinned = False
        if self.pack is not None and self._whole_pack:
            # The workers sampled straight into the shared block: the update reads it in place.
            batch = {key.removeprefix("batch/"): v for key, v in self.pack.views.items() if key.startswith("batch/")}
            pinned = self.pinned_batches
        else:
            batches = [member.world.batch() for member in self.members]
            # One member: a view (np.stack would copy a 16 MB pixel batch on every update).
            batch = (
                {key: value[None] for key, value in batches[0].items()}
                if len(batches) == 1
                else {key: np.stack([b[key] for b in batches]) for key in batches[0]}
            )
        tick = time.perf_counter()
        events = None
        if self.timeline is not None and self.device.type == "cuda":
            events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            events[0].record()
        result = self.agent.update(batch, self.step, pinned=pinned)
        if events is not None:
            events[1].record()
            self._update_events = events  # read with the metrics, after the update's only synchronization
        if self.timeline is not None:
            self.timeline.add("update", tick)  # host time: on a GPU the device runs on while the envs step
        return result, list(self.members)

    def record_update(self, update: tuple[UpdateResult, list[Member]], frame: int) -> None:
        """Append one update's metrics to each member's window; members with non-finite values diverged."""
        result, members = update  # the members in the agent's order when the update ran
        values = result.read()
        events, self._update_events = self._update_events, None
        if events is not None and self.timeline is not None:
            events[1].synchronize()
            self.timeline.gpu_update_ms.append(events[0].elapsed_time(events[1]))
        bad = set(nonfinite_members(values))
        for k, member in enumerate(members):
            if member not in self.members:
                continue  # it left the pack (failed) after the update ran
            if k in bad:
                shown = {key: float(column[k]) for key, column in values.items() if not np.isfinite(column[k])}
                self.end_members([member], DIVERGED, f"non-finite values: {shown}", frame=frame)
                continue
            for key, column in values.items():
                member.pending[key].append(float(column[k]))

    def end_members(
        self,
        ending: Sequence[Member],
        status: Status,
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
            configs = [mb.config for mb in self.members]
            self.agent = DrQV2Agent(configs, self.spec.obs_shape, self.spec.action_dim, self.device)
            for k, state in enumerate(states):
                self.agent.load_member_state_dict(k, state)

    def log_training(self) -> None:
        now, frame = time.perf_counter(), self.frame
        elapsed = now - self.interval_start[0]
        members = list(self.members)
        coverage = self.for_members(lambda member: member.world.coverage(), members)
        for member, covered in zip(members, coverage):
            if member not in self.members:
                continue
            row = {key: float(np.mean(values)) for key, values in member.pending.items() if values}
            row.update(covered)
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
        members, returns, samples = self._still_in_pack(members, returns, samples)
        biases = (
            self._q_biases(members, samples) if measure_here else [_interval_mean(mb.q_bias_pending) for mb in members]
        )
        coverage = self.for_members(lambda member: member.world.coverage(), members)
        for k, member in enumerate(members):
            if member not in self.members:
                continue
            row = {m.EVAL_RETURN: float(np.mean(returns[k]))} if returns[k] else {}
            bias = biases[k]
            if bias is not None:
                row[m.Q_BIAS_MEAN], row[m.Q_BIAS_STD] = bias
            row.update(coverage[k])
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
        returns, samples = self._rollouts(members, c.q_bias_episodes, c.q_bias_max_states, stop_when_sampled=True)
        members, _, samples = self._still_in_pack(members, returns, samples)
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
            # (reward, last) of each member's evaluation step; its observation is world.eval_obs. A member whose
            # world fails leaves the pack (failed) and the rollout goes on without it.
            steps: dict[int, tuple[float, bool]] = {}
            alive = self._alive(members)
            for k, reply in zip(alive, self.for_members(lambda mb: mb.world.eval_reset(), [members[k] for k in alive])):
                if reply is not None:
                    steps[k] = reply
            rewards: dict[int, list[float]] = {k: [] for k in steps}
            while (alive := self._alive(members)) and not all(steps[k][1] for k in alive):
                obs = np.stack([members[k].world.eval_obs for k in alive])  # the agent's members, in its order
                actions = self.agent.act(obs, self.step, eval_mode=True)
                running = [i for i, k in enumerate(alive) if not steps[k][1]]  # the others wait
                for i in running:
                    k = alive[i]
                    if len(samples.obs[k]) < q_states:
                        samples.obs[k].append(obs[i])
                        samples.actions[k].append(actions[i])
                stepped = self.for_members(
                    lambda member, action: member.world.eval_step(action),
                    [members[alive[i]] for i in running],
                    [actions[i] for i in running],
                )
                for i, step in zip(running, stepped):
                    if step is not None:
                        steps[alive[i]] = step
                        rewards[alive[i]].append(step[0])
            for k in self._alive(members):
                returns[k].append(float(np.sum(rewards[k])))
                needed = len(samples.obs[k]) - len(samples.mc_returns[k])
                if needed:
                    samples.mc_returns[k].extend(m.discounted_returns(np.asarray(rewards[k]), c.discount)[:needed])
        return returns, samples

    def _alive(self, members: Sequence[Member]) -> list[int]:
        """Indices of ``members`` still in the pack (in the agent's order: the pack only ever loses members)."""
        return [k for k, member in enumerate(members) if member in self.members]

    def _still_in_pack(
        self, members: Sequence[Member], returns: list[list[float]], samples: QSamples
    ) -> tuple[list[Member], list[list[float]], QSamples]:
        alive = self._alive(members)
        kept = QSamples(
            [samples.obs[k] for k in alive], [samples.actions[k] for k in alive], [samples.mc_returns[k] for k in alive]
        )
        return [members[k] for k in alive], [returns[k] for k in alive], kept

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
        }
        sync_before_checkpoint(member.sinks)  # the metrics are never older than a checkpoint on disk (#19)
        try:
            # the world adds coverage, streams and replay, and writes it (a worker process: there, so the replay
            # never crosses a pipe); the latest and the previous checkpoint are kept, each with its size and hash
            owner = checkpoint_owner(c.to_dict())
            final = member.world.save_checkpoint(state, member.out_dir, self.frame, self.step, owner).result()
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
        # each world its own part (with worker processes the replay crosses a pipe here, on resume only)
        self.map_members(
            lambda member, state: member.world.load({key: state[key] for key in WORLD_KEYS}), self.members, states
        )

    def close(self) -> None:
        if self.pack is not None:
            self.pack.close()  # every worker, and the shared block
        else:
            for member in [*self.members, *self.ended]:
                try:
                    member.world.close()
                except Exception as err:  # noqa: BLE001 - a member that failed may not close cleanly; the others must
                    print(f"warning: closing member {member.out_dir}: {type(err).__name__}: {err}", file=sys.stderr)
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


@dataclass(frozen=True)
class _Failure:
    """How a member's call failed: its error line and traceback."""

    line: str
    trace: str | None


def _capture(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or a ``_Failure`` when it raised.  A store that refuses writes is the pack's fault, not
    the member's: ``StoreWriteError`` goes up and interrupts the pack."""
    try:
        return fn(*args)
    except StoreWriteError:
        raise
    except WorkerError as err:  # the worker's own error line and traceback, or one line: it died
        return _Failure(err.line, err.trace)
    except Exception as err:  # noqa: BLE001 - a crashed member is a result too; the pack goes on
        return _Failure(f"{type(err).__name__}: {err}", traceback.format_exc())


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
