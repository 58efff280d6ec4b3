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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent import checkpoint, evaluation
from agent import metrics as m
from agent.allocator import keep_freed_memory
from agent.drqv2 import DrQV2Agent, UpdateResult, nonfinite_members
from agent.interrupts import Interrupted, interrupt_once
from agent.member import Member
from agent.member_process import WorkerError, WorkerPack, WorkerWorld
from agent.member_world import WORLD_KEYS, Done, LocalWorld, StepReport, WorldSpec
from agent.sinks import DiskSink, MetricSink, sync_before_checkpoint, write_config
from agent.trial_end import REFUSALS, Ending, finish_trial, now
from contract.config import ConfigError, TrialConfig, build_config, check_packable, help_text
from contract.store import (
    COMPLETED,
    DIVERGED,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    RUNNING,
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
                self.off_the_clock(evaluation.evaluate)
                self.next_eval_frame += c.eval_every_frames
            if c.q_bias_every_frames and self.frame >= self.next_q_bias_frame:
                if self.frame > c.num_seed_frames:  # as the authors', once updates have begun
                    self.off_the_clock(evaluation.measure_q_bias)
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
            self.off_the_clock(evaluation.evaluate)  # the final evaluation, at num_frames

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
            member.ended_as = Ending(status, error, trace or None, frame=self.frame if frame is None else frame)
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
            self.emit(member, frame, row)
            member.pending.clear()
        self.interval_start = (time.perf_counter(), frame)

    def emit(self, member: Member, frame: int, row: Mapping[str, float]) -> None:
        """One row to each of the member's sinks; a sink that raises ends that member (failed), not the pack."""

        def log() -> None:
            for sink in member.sinks:
                sink.log(frame, row)

        self._guarded(member, log)

    def off_the_clock(self, work: Callable[[Trainer], None]) -> None:
        """``work(self)`` (an evaluation), its time kept out of the training rows' perf/fps."""
        start = time.perf_counter()
        work(self)
        self.interval_start = (self.interval_start[0] + time.perf_counter() - start, self.interval_start[1])

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

    def load_checkpoints(self, saved: Sequence[checkpoint.TrialCheckpoint]) -> None:
        """Resume every member from its own checkpoint; all of them were written at the same step."""
        steps = {record.step for record in saved}
        if len(steps) != 1:
            raise ValueError(f"pack members resume from different steps {sorted(steps)}: run them as separate packs")
        first = saved[0]
        self.step = first.step
        self.next_log_frame, self.next_eval_frame = first.next_log_frame, first.next_eval_frame
        self.next_q_bias_frame = first.next_q_bias_frame
        for k, (member, record) in enumerate(zip(self.members, saved)):
            member.next_checkpoint_frame = record.next_checkpoint_frame
            member.pending = defaultdict(list, record.pending)
            member.q_bias_pending = [(mean, std) for mean, std in record.q_bias_pending]
            self.agent.load_member_state_dict(k, record.agent)
        # each world its own part (with worker processes the replay crosses a pipe here, on resume only)
        self.map_members(
            lambda member, record: member.world.load({key: getattr(record, key) for key in WORLD_KEYS}),
            self.members,
            saved,
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
    for found, out_dir in zip(loaded, dirs):
        if found.state is not None:  # an older layout is converted on request only: refused here, in one line
            checkpoint.check_layout(found.state, out_dir)
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
        started_at = now()
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
    pack_end: Ending | None = None  # how the whole pack ended (members that left early have their own)
    try:
        trainer = Trainer(configs, out_dirs, all_sinks)
        if all(found.state for found in loaded):
            states = [found.state for found in loaded if found.state is not None]
            checkpoint.apply_or_set_aside(
                lambda: trainer.load_checkpoints([checkpoint.TrialCheckpoint.from_state(s) for s in states]), out_dirs
            )
        trainer.run()
        pack_end = Ending(COMPLETED)
    except (KeyboardInterrupt, SystemExit) as err:  # resumable from the checkpoints; the caller sees it too
        pack_end = Ending.of(err)
        raise
    except Exception as err:  # a store that refuses writes, or a crashed pack: a result too, the sweep goes on
        pack_end = Ending.of(err)
    finally:
        ended = {member.out_dir: member for member in trainer.ended} if trainer else {}
        for k, out_dir in enumerate(out_dirs):
            member = ended.get(out_dir)
            end = member.ended_as if member is not None and member.ended_as is not None else pack_end
            if end is not None:
                statuses[k] = end.applied_to(statuses[k], trainer.frame if trainer is not None else statuses[k].frame)
        if trainer is not None:
            trainer.close()
        elapsed = time.perf_counter() - started
        for k, out_dir in enumerate(out_dirs):
            statuses[k] = finish_trial(
                out_dir, statuses[k], all_sinks[k], keep_replay=configs[k].keep_replay, run_seconds=elapsed
            )
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
    except REFUSALS as err:
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
