"""The status machine is enforced by its writer (issue #20): ``write_status`` moves a trial only along an edge of
``contract.status.TRANSITIONS`` from the state on disk, and statuses are an enum that reads and writes as its text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contract.status import (
    COMPLETED,
    DIVERGED,
    FAILED,
    INTERRUPTED,
    NEW,
    RUNNING,
    STATUSES,
    TRANSITIONS,
    Status,
    StatusTransitionError,
    TrialStatus,
)
from contract.store import METRICS_FILE, STATUS_FILE, read_status, trial_state, write_status

REPO = Path(__file__).resolve().parents[2]
EDGES = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}


def _put(out_dir: Path, state: Status) -> None:
    """A trial directory whose status.json says ``state`` (NEW: none), written behind the writer's back."""
    out_dir.mkdir()
    if state is not NEW:
        (out_dir / STATUS_FILE).write_text(json.dumps({"status": str(state), "frame": 10}))


@pytest.mark.parametrize("previous", STATUSES)
@pytest.mark.parametrize("following", STATUSES[1:])  # NEW is never written: it is the absence of a status
def test_write_status_takes_exactly_the_edges_of_the_machine(tmp_path, previous, following):
    out_dir = tmp_path / "trial"
    _put(out_dir, previous)
    if (previous, following) in EDGES:
        write_status(out_dir, TrialStatus(following, frame=20))
        assert read_status(out_dir) == TrialStatus(following, frame=20)
    else:
        before = (out_dir / STATUS_FILE).read_bytes() if previous is not NEW else None
        with pytest.raises(StatusTransitionError, match=f"{previous} -> {following}"):
            write_status(out_dir, TrialStatus(following, frame=20))
        after = (out_dir / STATUS_FILE).read_bytes() if (out_dir / STATUS_FILE).exists() else None
        assert after == before  # a refused write leaves the file as it was


def test_the_machine_is_the_documented_one():
    # new -> running -> completed | diverged | failed | interrupted; failed | interrupted -> running; a run that
    # ends before it runs: new | failed | interrupted -> failed | interrupted. Nothing leaves a finished state.
    assert EDGES == {
        (NEW, RUNNING),
        *((RUNNING, s) for s in (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED)),
        *((s, t) for s in (NEW, FAILED, INTERRUPTED) for t in (RUNNING, FAILED, INTERRUPTED)),
    }


def test_a_lost_status_of_a_trial_with_metrics_reads_as_running(tmp_path):
    # the worker writes its status before metrics: metrics without a readable status means it was running
    out_dir = tmp_path / "trial"
    out_dir.mkdir()
    (out_dir / METRICS_FILE).write_text("frame\n")
    (out_dir / STATUS_FILE).write_text("{torn")
    assert trial_state(out_dir) is RUNNING
    write_status(out_dir, TrialStatus(INTERRUPTED, frame=5))
    assert trial_state(out_dir) is INTERRUPTED


def test_status_is_text_on_disk_and_an_enum_in_memory(tmp_path):
    out_dir = tmp_path / "trial"
    out_dir.mkdir()
    write_status(out_dir, TrialStatus("running", frame=0))  # text is taken and converted
    assert json.loads((out_dir / STATUS_FILE).read_text())["status"] == "running"
    record = read_status(out_dir)
    assert record is not None and record.state is Status.RUNNING and record.state == "running"
    with pytest.raises(ValueError, match="expected one of"):
        TrialStatus("finished")


def test_the_contract_package_imports_neither_torch_nor_any_other_part_of_bnsweep():
    code = (
        "import sys, pkgutil, importlib, contract\n"
        "for m in pkgutil.iter_modules(contract.__path__): importlib.import_module('contract.' + m.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'agent', 'envs', 'orchestrator', 'analysis', 'bench', 'ray', 'wandb'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
