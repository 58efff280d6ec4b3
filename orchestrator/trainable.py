"""The Ray Tune function trainable: one pack of worker trials, with Tune and W&B sinks per member.

Runs inside a Ray worker process.  A Ray trial is a *pack* (issue #9): up to K
trials ("members") that the worker trains together in one process
(``agent.train.run_pack``); a pack of one is an ordinary trial.  For each member
this skips it when the store says it is done, puts Ray's copy of its checkpoint
into the store when the store's is missing or older, writes its ``trial.json``
and gives it its own sinks: a ``TuneSink`` whose rows carry the member's trial id
(so the live view can attribute them) and, with W&B on, its own W&B run.  The
worker writes each member's files exactly as for a single trial; a member that
diverges or fails ends so in its own ``status.json`` while the others go on.
When any member failed, the pack raises ``TrialFailed`` after ``run_pack``
returns, so ``FailureConfig(max_failures)`` retries it: finished members are then
skipped and failed ones resume from their own checkpoints.

Ray checkpoint of a pack (with ``ray_checkpoints``): one directory holding one
subdirectory per unfinished member, named by its trial id, each a copy of that
member's ``checkpoint/`` (with the ``.metadata.json`` frame marker), plus
``pack.json`` ({"pack_id", "frames": {trial_id: frame}}).  It is reported when
every member still training has written a checkpoint since the last report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray import tune

from contract import store
from contract.config import build_config
from contract.store import (
    FAILED,
    RUNNING,
    STORE_ERRNOS,
    StoreWriteError,
    TrialStatus,
    read_status,
    write_status,
)
from orchestrator.faults import STORE_FAULT_KEY, quiet_ray_store_errors
from orchestrator.packing import member_meta

PACK_CHECKPOINT_FILE = "pack.json"
MEMBER_KEY = "member"  # the trial id a reported row belongs to
MEMBER_STATUS_KEY = "member_status"  # a member's final status, reported once when it ends


class TrialFailed(RuntimeError):
    """Raised so Ray counts the failure and retries up to max_failures."""


class StoreFault(TrialFailed):
    """The result store refused a write: the sweep stops (the driver's stopper sees STORE_FAULT_KEY)."""


def _write_frame_marker(path: Path, frame: int) -> None:
    """``<checkpoint>/.metadata.json``: the planner reads where an unfinished trial resumes from it."""
    tune.Checkpoint.from_directory(str(path)).set_metadata({"frame": int(frame)})


class PackCheckpointer:
    """Assembles a pack's Ray checkpoint from its members' checkpoints (layout in the module docstring)."""

    def __init__(self, pack_id: str, members: Mapping[str, Path], staging: Path, enabled: bool):
        self.pack_id = pack_id
        self.out_dirs = dict(members)  # trial id -> the member's store directory
        self.staging = staging
        self.enabled = enabled
        self.training = set(members)  # members that have not ended yet
        self.fresh: set[str] = set()  # members with a checkpoint newer than the last report
        self.ended: dict[str, str] = {}  # trial id -> final status

    def member_checkpoint(self, tid: str, frame: int, path: Path) -> None:
        _write_frame_marker(path, frame)  # written either way: the planner needs it
        self.fresh.add(tid)
        self.maybe_report()

    def member_ended(self, tid: str, status: str) -> None:
        self.training.discard(tid)
        self.ended[tid] = status
        self.maybe_report()

    def maybe_report(self) -> None:
        if self.enabled and self.fresh and self.training <= self.fresh:
            self.report()

    def report(self) -> None:
        self.fresh.clear()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        frames: dict[str, int] = {}
        try:
            for tid, out_dir in self.out_dirs.items():
                if self.ended.get(tid) in store.FINISHED_STATUSES:
                    continue  # the store has its result; a retry skips it
                frame = store.checkpoint_frame(out_dir)
                source = out_dir / store.CHECKPOINT_DIR
                if frame is None or not source.is_dir():
                    continue
                shutil.copytree(source, self.staging / tid, copy_function=_link_or_copy)
                frames[tid] = frame
            if not frames:
                return
            (self.staging / PACK_CHECKPOINT_FILE).write_text(json.dumps({"pack_id": self.pack_id, "frames": frames}))
            checkpoint = tune.Checkpoint.from_directory(str(self.staging))
            checkpoint.set_metadata({"pack_id": self.pack_id, "frames": frames})
            # Ray copies the directory into its storage before report() returns
            with _ray_store_writes(self.staging, "Ray's copy of the pack's checkpoint"):
                tune.report(
                    {"checkpoint_frame": min(frames.values()), "checkpoint_members": len(frames)}, checkpoint=checkpoint
                )
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)


@contextmanager
def _ray_store_writes(path: Path, what: str) -> Iterator[None]:
    """Ray persists results and checkpoints into the store (its syncer, inside tune.report): a refused write
    there is the store's fault like any other (issue #11), not the trial's."""

    try:
        yield
    except StoreWriteError:
        raise
    except OSError as err:
        if err.errno not in STORE_ERRNOS:
            raise
        raise StoreWriteError(err, path, what) from err


def _link_or_copy(source: str, target: str) -> None:
    """Hard links: a pack checkpoint costs no copy of multi-GB replays before Ray persists it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class TuneSink:
    """Forwards one member's log rows and checkpoints to Ray Tune (live view, Tune's fault tolerance)."""

    def __init__(self, trial_id: str, checkpointer: PackCheckpointer):
        self.trial_id = trial_id
        self.checkpointer = checkpointer

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        with _ray_store_writes(self.checkpointer.staging.parent, "Ray's copy of the results"):
            tune.report(
                {
                    MEMBER_KEY: self.trial_id,
                    "frame": int(frame),
                    **{k: float(v) for k, v in metrics.items() if v is not None},
                }
            )

    def checkpoint(self, frame: int, path: Path) -> None:
        self.checkpointer.member_checkpoint(self.trial_id, frame, Path(path))

    def close(self, status: store.TrialStatus) -> None:
        pass


def restore_ray_checkpoint(out_dir: Path, trial_id: str, checkpoint: Any, single: bool = False) -> str | None:
    """Put Ray's copy of this member's checkpoint into the store when the store's latest one is missing,
    older, or damaged (issue #11), and Ray's copy is intact; returns a note saying so, else None.

    The store's checkpoint is normally the newest (the worker writes it first); Ray's copy matters
    when the pack restarts on a node that cannot see it, or when the store's copy was damaged.
    ``single``: also accept the layout of checkpoints reported before packing (the member's files at
    the top level).
    """
    from agent import checkpoint as checkpoints

    if checkpoint is None:
        return None
    target = out_dir / checkpoints.LATEST
    with checkpoint.as_directory() as directory:
        root = Path(directory)
        source = root / trial_id
        if not source.is_dir():
            if not (single and not (root / PACK_CHECKPOINT_FILE).exists() and any(root.glob("*.pt"))):
                return None
            source = root
        try:
            ray_frame = int(checkpoints.verify(source)["frame"])
        except checkpoints.CheckpointError as err:
            print(f"Ray's copy of the checkpoint of {trial_id} is not used: {err}", file=sys.stderr)
            return None
        reason = "missing"
        if target.exists():
            try:
                store_frame = int(checkpoints.verify(target)["frame"])
            except checkpoints.CheckpointError as err:
                reason = f"damaged ({err})"
            else:
                if store_frame >= ray_frame:
                    return None
                reason = f"older (frame {store_frame})"
        staging = out_dir / (checkpoints.LATEST + ".ray")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        if target.exists():
            damaged = out_dir / checkpoints.DAMAGED
            shutil.rmtree(damaged, ignore_errors=True)
            target.rename(damaged)
        staging.rename(target)
    note = f"the store's checkpoint/ was {reason}: restored Ray's intact copy (frame {ray_frame})"
    print(f"{trial_id}: {note}", file=sys.stderr)
    return note


def record_fallback(out_dir: Path, note: str) -> None:
    """Add a checkpoint fallback to the trial's status.json (the worker keeps the list and adds its own)."""

    status = read_status(out_dir) or TrialStatus(RUNNING, frame=0)
    fallback = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "note": note}
    write_status(out_dir, replace(status, checkpoint_fallbacks=(*status.checkpoint_fallbacks, fallback)))


def pack_resources(param: Mapping[str, Any]) -> Any:
    """Ray resources of one pack: the grid's per-trial CPUs and GPU share, and its estimated host memory."""
    from ray.tune.execution.placement_groups import PlacementGroupFactory

    spec = param["pack"]
    resources = spec.get("resources") or {}
    bundle = {"CPU": float(resources.get("cpu", 1)), "memory": float(spec.get("memory_bytes", 0))}
    if float(resources.get("gpu", 0)) > 0:
        bundle["GPU"] = float(resources["gpu"])
    return PlacementGroupFactory([bundle])


def run(param: dict[str, Any]) -> None:
    """Tune entry point; ``param["pack"]`` is the payload built by ``orchestrator.launch.pack_payload``."""
    # Ray logs every persisted checkpoint at INFO; with hundreds of trials that drowns the console.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    quiet_ray_store_errors()
    spec = param["pack"]
    members = spec["members"]
    todo = []
    for member in members:
        out_dir = Path(member["out_dir"])
        state = store.trial_state(out_dir)
        if state in store.FINISHED_STATUSES:
            # A restored Ray experiment or a retried pack lists members the store already has: the
            # store decides, nothing is recomputed.
            tune.report(
                {
                    MEMBER_KEY: member["trial_id"],
                    MEMBER_STATUS_KEY: state,
                    "skipped": 1,
                    "frame": int(member["config"]["num_frames"]),
                }
            )
        else:
            todo.append(member)
    if not todo:
        return
    checkpoint = tune.get_checkpoint()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    out_dirs = []
    for member in todo:
        out_dir = Path(member["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        note = restore_ray_checkpoint(out_dir, member["trial_id"], checkpoint, single=len(members) == 1)
        if note:
            record_fallback(out_dir, note)
        members = [m["trial_id"] for m in todo]
        meta = member_meta(member["meta"], spec["pack_id"], members, started_at, resources=spec.get("resources"))
        store.write_trial_meta(out_dir, meta)
        out_dirs.append(out_dir)
    run_members(spec, todo, out_dirs)


def run_members(spec: Mapping[str, Any], todo: Sequence[Mapping[str, Any]], out_dirs: Sequence[Path]) -> None:
    from agent.train import run_pack
    from agent.trial_end import finish_unstarted

    grid_dir = out_dirs[0].parent
    checkpointer = PackCheckpointer(
        spec["pack_id"],
        {m["trial_id"]: d for m, d in zip(todo, out_dirs)},
        grid_dir / store.RAY_DIR / ".staging" / f"{spec['pack_id']}-{os.getpid()}",
        enabled=spec.get("ray_checkpoints", True),
    )
    configs = [build_config(m["config"]) for m in todo]
    sinks: list[list[Any]] = []
    for member, out_dir in zip(todo, out_dirs):
        member_sinks: list[Any] = [TuneSink(member["trial_id"], checkpointer)]
        if spec.get("wandb"):
            from orchestrator.wandb_sink import WandbSink

            member_sinks.append(WandbSink(spec["wandb"], member["meta"], member["config"], out_dir, teardown=False))
        sinks.append(member_sinks)
    finals: dict[int, TrialStatus] = {}

    def on_status(index: int, status: TrialStatus) -> None:
        tid = todo[index]["trial_id"]
        finals[index] = status
        checkpointer.member_ended(tid, status.state)
        tune.report(
            {
                MEMBER_KEY: tid,
                MEMBER_STATUS_KEY: status.state,
                "frame": int(status.frame or 0),
                "wall_time_s": float(status.wall_time_s or 0.0),
            }
        )

    try:
        # Ray stops a trial (Ctrl-C, SIGTERM, a stopped sweep) by raising SystemExit out of tune.report: the
        # worker then marks its members "interrupted" at their frame; they resume from their checkpoints.
        statuses = run_pack(configs, out_dirs, sinks, on_status)
    except Exception as err:  # run_pack raises only before its own bookkeeping starts (e.g. a full disk)
        statuses = []
        for index, out_dir in enumerate(out_dirs):
            if index not in finals:
                on_status(index, finish_unstarted(out_dir, err, sinks[index]))
            statuses.append(finals[index])
    finally:
        if spec.get("wandb"):
            _wandb_teardown()
    for index, status in enumerate(statuses):
        if index not in finals:  # a worker that did not call on_status for this member
            on_status(index, status)
    store_errors = [s for s in statuses if s.store_error]
    if store_errors:
        # The driver's StoreFaultStopper ends the whole sweep on this row: every trial would hit the same disk.
        try:
            tune.report({STORE_FAULT_KEY: str(store_errors[0].error)})
        except OSError:
            pass  # Ray cannot persist even this: the driver finds the full disk itself
        raise StoreFault(str(store_errors[0].error))
    failed = [(m, s) for m, s in zip(todo, statuses) if s.state == FAILED]
    if failed:
        detail = "; ".join(
            f"trial {m['trial_id']} failed: {s.error} (see {Path(m['out_dir']) / 'status.json'})" for m, s in failed
        )
        raise TrialFailed(
            f"pack {spec['pack_id']}: {len(failed)} of {len(todo)} members failed: {detail}"
            if len(todo) > 1
            else detail
        )


def _wandb_teardown() -> None:
    """One W&B service per process: stopped once, after every member's run has finished."""
    from orchestrator.wandb_sink import teardown_wandb

    teardown_wandb()  # never raises: a failure is one warning line, never a traceback


def trial_name(trial: Any) -> str:
    """Ray's display name: readable cell and seed (of the first member, and how many more)."""
    members = trial.config["pack"]["members"]
    first = members[0]["meta"]
    more = f" +{len(members) - 1}" if len(members) > 1 else ""
    return f"{first['cell_name']} s{first['seed']}{more}"


def trial_dirname(trial: Any) -> str:
    """Ray's per-trial directory under results/<grid>/_ray/<experiment>/: the pack id (a lone trial's id)."""
    return str(trial.config["pack"]["pack_id"])


def worker_env() -> dict[str, str]:
    """Environment the trials need wherever they run (not secrets)."""
    from orchestrator import REPO_ROOT

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for key in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env
