"""The end of a trial, written once: how a run ended (``Ending``) and what ending it does (``finish_trial``).

Every way a member stops goes through here: the worker's pack (``agent.train``) for members that completed,
diverged, failed or were interrupted (Ctrl-C, Ray stopping the trial, a store that refused a write), and the
Ray trainable when the worker raised before its own bookkeeping began.  ``finish_trial`` writes the final
``status.json`` first and then closes the member's sinks with it, so a sink (W&B's summary) never says more
than the store does.  The sinks come from the caller: this module knows no Ray or W&B.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from agent import checkpoint
from agent.sinks import MetricSink
from contract.store import (
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    NEW,
    ForeignTrialDir,
    Status,
    StoreWriteError,
    TrialStatus,
    read_status,
    write_status,
)

# Runs refused before they started: the trial stays what it was on disk, and the refusal is its one line.
REFUSALS: tuple[type[Exception], ...] = (ForeignTrialDir, checkpoint.OutdatedCheckpoint)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Ending:
    """How a run of a trial ended: the state it ends in, why, and at which frame (None: where the pack was)."""

    state: Status
    error: str | None = None
    traceback: str | None = None
    store_error: bool = False
    frame: int | None = None

    @classmethod
    def of(cls, err: BaseException) -> Ending:
        """The ending of a run that raised ``err``: stopped from outside and a store that refuses writes are not
        the trial's fault (``interrupted``, resumable); anything else ``failed`` it, with its traceback, except a
        refusal, which is its one line."""
        if isinstance(err, (KeyboardInterrupt, SystemExit)):  # Ctrl-C, or Ray ending the trial out of tune.report
            return cls(INTERRUPTED, "stopped from outside")
        if isinstance(err, StoreWriteError):  # a full or read-only store: a rerun resumes it
            return cls(INTERRUPTED, str(err), store_error=True)
        trace = None if isinstance(err, REFUSALS) else "".join(traceback.format_exception(err))
        return cls(FAILED, f"{type(err).__name__}: {err}", trace)

    def applied_to(self, status: TrialStatus, frame: int | None) -> TrialStatus:
        """``status`` ending so, at this ending's frame or else at ``frame``; the traceback or store error that
        ``status`` holds (an earlier run's) stays unless this ending has its own."""
        return replace(
            status,
            state=self.state,
            error=self.error,
            traceback=self.traceback or status.traceback,
            store_error=self.store_error or status.store_error,
            frame=self.frame if self.frame is not None else frame,
        )


def finish_trial(
    out_dir: Path, status: TrialStatus, sinks: Sequence[MetricSink], *, keep_replay: bool, run_seconds: float
) -> TrialStatus:
    """Record the end of a run that ended as ``status`` (``run_seconds`` long) and close its sinks; returns the
    status written.  An interrupted trial says where a rerun resumes; a finished one keeps only what analysis
    reads of its checkpoints.  A store that refuses the write is printed and marked in the returned status
    (``store_error``): the caller reports the pack's error."""
    if status.state == INTERRUPTED:  # metrics.csv holds rows to "frame"; a rerun resumes from the checkpoint
        status = replace(status, checkpoint_frame=checkpoint.frame_of(out_dir) or 0)
    elif status.state in FINISHED_STATUSES:
        checkpoint.prune_finished(out_dir, keep_replay=keep_replay)
    status = replace(status, wall_time_s=(status.wall_time_s or 0.0) + run_seconds, finished_at=now())
    try:
        write_status(out_dir, status)
    except StoreWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        status = replace(status, store_error=True)
    close_sinks(sinks, status)
    return status


def finish_unstarted(out_dir: Path, err: Exception, sinks: Sequence[MetricSink]) -> TrialStatus:
    """The end of a run that raised ``err`` before the worker wrote this trial's status: the status on disk ends
    so (its keys kept), except after a refusal, which leaves it as it was (another trial's directory, or a
    checkpoint to upgrade first)."""
    status = Ending.of(err).applied_to(previous := read_status(out_dir) or TrialStatus(NEW), previous.frame)
    if isinstance(err, REFUSALS):
        close_sinks(sinks, status)
        return status
    return finish_trial(out_dir, status, sinks, keep_replay=False, run_seconds=0.0)


def close_sinks(sinks: Sequence[MetricSink], status: TrialStatus) -> None:
    """Each sink closed with the final status; a broken view (W&B) never costs the others or the disk results."""
    for sink in sinks:
        try:
            sink.close(status)
        except Exception as err:  # noqa: BLE001 - one warning line, the trial's end is already on disk
            print(f"warning: sink {type(sink).__name__} failed to close: {err}", file=sys.stderr)
