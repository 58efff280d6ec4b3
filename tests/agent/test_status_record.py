"""status.json as a typed record (issue #12): ``TrialStatus`` round-trips, writes the keys the dict writers wrote,
reads the files they left (unknown keys kept), and reads a garbled file or an unknown state as before."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from contract import store
from contract.store import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    NEW,
    RUNNING,
    STATUS_FILE,
    TrialStatus,
    read_status,
    write_status,
)
from orchestrator.faults import mark_interrupted

# What the worker wrote when a fresh run started, and when a resumed one failed, before the record existed.
STARTED = {
    "status": "running",
    "frame": 0,
    "num_frames": 4000,
    "wall_time_s": 0.0,
    "started_at": "2025-01-02T03:04:05+00:00",
    "resumed_from_frame": None,
    "pack_size": 2,
}
FAILED_AFTER_FALLBACK = {
    "status": "failed",
    "frame": 3000,
    "num_frames": 4000,
    "wall_time_s": 12.5,
    "started_at": "2025-01-02T03:04:05+00:00",
    "resumed_from_frame": 2000,
    "pack_size": 1,
    "checkpoint_fallbacks": [{"at": "2025-01-02T03:04:05+00:00", "resumed_from_frame": 2000, "note": "damaged"}],
    "error": "RuntimeError: boom",
    "traceback": "Traceback (most recent call last): ...",
    "finished_at": "2025-01-02T03:05:00+00:00",
}


def raw(directory: Path) -> dict:
    return json.loads((directory / STATUS_FILE).read_text())


def test_a_record_round_trips_and_writes_the_keys_the_dict_writers_wrote(tmp_path: Path) -> None:
    for old in (STARTED, FAILED_AFTER_FALLBACK):
        status = TrialStatus.from_json(old)
        assert status.to_json() == old and list(status.to_json()) == list(old)  # same keys, values and order
        write_status(tmp_path, status)
        assert raw(tmp_path) == old
        assert read_status(tmp_path) == status
    write_status(tmp_path, TrialStatus(RUNNING))  # the writer moves only along the status machine: failed -> running
    full = TrialStatus(
        INTERRUPTED, frame=10, error="stopped", store_error=True, checkpoint_frame=8, extra={"note": [1, 2]}
    )
    write_status(tmp_path, full)
    assert read_status(tmp_path) == full
    assert raw(tmp_path) == {
        "status": "interrupted",
        "frame": 10,
        "error": "stopped",
        "store_error": True,
        "checkpoint_frame": 8,
        "note": [1, 2],
    }
    # what the orchestrator writes for a trial that has no status yet: just these keys, as before
    write_status(tmp_path, TrialStatus(RUNNING, frame=0))
    assert raw(tmp_path) == {"status": "running", "frame": 0}


def test_an_old_file_with_an_unknown_key_is_read_and_the_key_kept(tmp_path: Path) -> None:
    old = {**FAILED_AFTER_FALLBACK, "status": "running", "gpu_note": "from a later version", "frame": 2500.0}
    (tmp_path / STATUS_FILE).write_text(json.dumps(old))
    status = read_status(tmp_path)
    assert status is not None and status.state == RUNNING and status.frame == 2500 and status.pack_size == 1
    assert status.checkpoint_fallbacks[0]["note"] == "damaged" and status.extra == {"gpu_note": "from a later version"}
    assert store.trial_state(tmp_path) == RUNNING
    # a writer that updates it keeps every key, as the dict writers' {**status, ...} did
    assert mark_interrupted([tmp_path], "killed") == (1, [])
    assert raw(tmp_path) == {**old, "status": "interrupted", "error": "killed", "frame": 2500}


def test_a_garbled_file_or_an_unknown_state_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / STATUS_FILE
    assert read_status(tmp_path) is None and store.trial_state(tmp_path) == NEW  # no status.json
    for garbled in ('{"status": "runn', '["not", "a", "mapping"]', "null", ""):
        path.write_text(garbled)
        assert read_status(tmp_path) is None and store.trial_state(tmp_path) == NEW
    (tmp_path / store.METRICS_FILE).write_text("frame\n0\n")
    assert store.trial_state(tmp_path) == RUNNING  # metrics but no readable status: it was running

    # a readable object with a missing or unknown state: ``new`` (metrics or not), its other keys read
    for state in ({"status": "paused"}, {}, {"status": None}, {"status": ["completed"]}):
        path.write_text(json.dumps({**state, "frame": 4000, "wall_time_s": 3.0}))
        status = read_status(tmp_path)
        assert status is not None and status.state == NEW and status.frame == 4000 and status.wall_time_s == 3.0
        assert store.trial_state(tmp_path) == NEW and not store.is_done(tmp_path)
        assert store.resume_frame(tmp_path) == 0  # unfinished, no checkpoint
        with pytest.raises(ValueError):
            write_status(tmp_path, status)  # never written back as ``new``
    # a value of the wrong type reads as absent (the state stays)
    path.write_text(json.dumps({"status": "completed", "frame": "lots", "error": 3, "store_error": "yes"}))
    status = read_status(tmp_path)
    assert status == TrialStatus(COMPLETED) and store.is_done(tmp_path) and store.resume_frame(tmp_path) == 0
    path.write_text(json.dumps({"status": "completed", "frame": 4000, "checkpoint_fallbacks": {"at": 1}}))
    assert read_status(tmp_path) == TrialStatus(COMPLETED, frame=4000) and store.resume_frame(tmp_path) == 4000


def test_updates_and_states_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TrialStatus("paused")
    status = TrialStatus.from_json(STARTED)
    failed = replace(status, state=FAILED, error="boom")
    assert failed.to_json() == {**STARTED, "status": "failed", "error": "boom"} and status.to_json() == STARTED
    with pytest.raises(ValueError):
        write_status(tmp_path, TrialStatus(NEW))


def test_the_store_module_imports_without_torch() -> None:
    code = "import sys, contract.store; assert 'torch' not in sys.modules; contract.store.TrialStatus('running')"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
