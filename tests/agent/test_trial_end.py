"""The one end of a trial (agent/trial_end.py): how an exception ends a run, and the order of its last writes."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import pytest

from agent.checkpoint import OutdatedCheckpoint
from agent.trial_end import Ending, finish_trial, finish_unstarted
from contract.store import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    RUNNING,
    StoreWriteError,
    TrialStatus,
    read_status,
    write_status,
)

E = TypeVar("E", bound=BaseException)


class StatusReader:
    """A sink that reads the store's status.json when it is closed (as W&B's summary takes the final state)."""

    def __init__(self, out_dir: Path, fails: bool = False):
        self.out_dir, self.fails = out_dir, fails
        self.seen: list[tuple[str | None, str]] = []  # (status.json's state when closed, the status it was given)

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        pass

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: TrialStatus) -> None:
        on_disk = read_status(self.out_dir)
        self.seen.append((on_disk.state if on_disk else None, status.state))
        if self.fails:
            raise RuntimeError("the view is down")


def _raised(err: E) -> E:
    """``err`` as an except clause holds it: with its traceback."""
    try:
        raise err
    except BaseException:  # noqa: BLE001 - caught to carry its traceback
        return err


def test_an_exception_ends_a_run_interrupted_or_failed() -> None:
    assert Ending.of(KeyboardInterrupt()) == Ending(INTERRUPTED, "stopped from outside")
    assert Ending.of(SystemExit("ray")) == Ending(INTERRUPTED, "stopped from outside")
    full = StoreWriteError(OSError(errno.ENOSPC, "No space left on device"), "/store/x", "the trial status")
    assert Ending.of(full) == Ending(INTERRUPTED, str(full), store_error=True)
    crashed = Ending.of(_raised(ValueError("bad")))
    assert crashed.state == FAILED and crashed.error == "ValueError: bad"
    assert crashed.traceback and "Traceback" in crashed.traceback and "_raised" in crashed.traceback
    refused = Ending.of(_raised(OutdatedCheckpoint("DIR: run the upgrade")))
    assert refused.state == FAILED and refused.traceback is None  # its one line says it all


def test_the_final_status_is_written_before_the_sinks_close_and_a_broken_sink_costs_nothing(tmp_path: Path) -> None:
    running = TrialStatus(RUNNING, frame=0, wall_time_s=10.0)
    write_status(tmp_path, running)
    sinks = [StatusReader(tmp_path, fails=True), StatusReader(tmp_path)]
    final = finish_trial(tmp_path, Ending(COMPLETED).applied_to(running, 4000), sinks, keep_replay=False, run_seconds=2)
    assert final.state == COMPLETED and final.frame == 4000 and final.wall_time_s == 12.0 and final.finished_at
    assert read_status(tmp_path) == final
    assert [sink.seen for sink in sinks] == [[(COMPLETED, COMPLETED)]] * 2


def test_an_interrupted_run_says_where_it_resumes_and_keeps_an_earlier_traceback(tmp_path: Path) -> None:
    running = TrialStatus(RUNNING, frame=0, traceback="of the run before")
    write_status(tmp_path, running)
    final = finish_trial(
        tmp_path, Ending.of(KeyboardInterrupt()).applied_to(running, 1500), [], keep_replay=False, run_seconds=0
    )
    assert final.state == INTERRUPTED and final.frame == 1500 and final.checkpoint_frame == 0
    assert final.traceback == "of the run before"


@pytest.mark.parametrize("refusal", [True, False])
def test_a_run_that_never_started_ends_on_disk_unless_it_was_refused(tmp_path: Path, refusal: bool) -> None:
    before = TrialStatus(RUNNING, frame=2000)  # a run the worker could not take over
    write_status(tmp_path, before)
    err: Exception = (
        OutdatedCheckpoint("DIR: run the upgrade")
        if refusal
        else StoreWriteError(OSError(errno.EROFS, "ro"), tmp_path, "x")
    )
    sink = StatusReader(tmp_path)
    status = finish_unstarted(tmp_path, _raised(err), [sink])
    assert status.frame == 2000
    if refusal:
        assert status.state == FAILED and read_status(tmp_path) == before and sink.seen == [(RUNNING, FAILED)]
    else:
        assert status.state == INTERRUPTED and status.store_error and read_status(tmp_path) == status
        assert sink.seen == [(INTERRUPTED, INTERRUPTED)]
