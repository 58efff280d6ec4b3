"""Faults around a trial's own files (issue #11): damaged, partial, old-format and malicious checkpoints, a
torn metrics line.  Real trials on a real dm_control task, tiny networks; every resumed trial is compared
with an uninterrupted run of the same config, so "recovered" means "the same numbers", not "it ran"."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from agent import checkpoint
from agent.train import main, run_trial
from contract.config import build_config
from contract.store import TrialStatus
from tests.agent.test_train import TINY_STATES

REPO = Path(__file__).resolve().parents[2]
TINY = {**TINY_STATES, "num_frames": 4000}  # the worker tests' tiny trial: checkpoints, evaluations, log rows


class StopAt:
    """A sink that stops the trial from outside (as Ray does, with SystemExit) once it logs ``frame``."""

    def __init__(self, frame: int):
        self.frame = frame

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        if frame >= self.frame:
            raise SystemExit("stopped by the test")

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: TrialStatus) -> None:
        pass


def metrics(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "metrics.csv")
    return frame.drop(columns=[c for c in frame.columns if c.startswith("perf/")]).reset_index(drop=True)


def status(out: Path) -> dict[str, Any]:
    return json.loads((out / "status.json").read_text())


def damage(directory: Path) -> None:
    """What the issue's reporter did: the state file replaced by 100 random bytes."""
    (directory / checkpoint.STATE_FILE).write_bytes(np.random.default_rng(0).bytes(100))


def test_round_trip_keeps_types_and_reads_without_unpickling(tmp_path: Path) -> None:
    rng = np.random.RandomState(3)
    state = {
        "frame": 5,
        "replay": {
            "frames": np.arange(12, dtype=np.uint8).reshape(3, 4),
            "read_only": np.frombuffer(b"abc", dtype=np.uint8),
            "next": np.int64(7),
        },
        "rng": rng.get_state(),
        "bits": np.random.default_rng(1).bit_generator.state,
        "generator": torch.Generator().manual_seed(2).get_state(),
        "pending": {"x": [1.5, 2.5]},
        "pairs": [(torch.zeros(2), torch.ones(2))],
    }
    checkpoint.save(tmp_path, state, frame=5, step=2)
    loaded = checkpoint.load(tmp_path / checkpoint.LATEST)
    assert loaded["replay"]["frames"].dtype == np.uint8 and np.array_equal(
        loaded["replay"]["frames"], state["replay"]["frames"]
    )
    assert loaded["replay"]["read_only"].tobytes() == b"abc"
    assert isinstance(loaded["replay"]["next"], np.int64) and loaded["replay"]["next"] == 7
    restored = np.random.RandomState()
    restored.set_state(loaded["rng"])
    assert restored.randint(1 << 30) == rng.randint(1 << 30)
    assert loaded["bits"] == state["bits"] and torch.equal(loaded["generator"], state["generator"])
    assert loaded["pending"] == {"x": [1.5, 2.5]} and torch.equal(loaded["pairs"][0][1], torch.ones(2))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    """An attacker who can write into the store, manifest and hash included, still runs nothing."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    directory = tmp_path / checkpoint.LATEST
    directory.mkdir()
    data = pickle.dumps({"frame": 1000, "step": 500, "x": Payload()})
    torch.save({"frame": 1000}, directory / checkpoint.STATE_FILE)  # a zip torch.load would open...
    (directory / checkpoint.STATE_FILE).write_bytes(data)  # ...replaced by a bare malicious pickle
    (directory / checkpoint.MANIFEST_FILE).write_text(
        json.dumps(
            {
                "format": checkpoint.FORMAT,
                "frame": 1000,
                "step": 500,
                "files": {checkpoint.STATE_FILE: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
            }
        )
    )
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(directory)
    found = checkpoint.load_latest(tmp_path)
    assert found.state is None and not marker.exists()
    assert "restarts from frame 0" in found.notes[-1]


def test_damaged_latest_falls_back_to_the_previous_then_to_frame_0(
    tmp_path: Path, tiny_reference: pd.DataFrame, interrupted_trial: Callable[[Path], None]
) -> None:
    out = tmp_path / "trial"
    interrupted_trial(out)
    damage(out / checkpoint.LATEST)
    final = run_trial(build_config(TINY), out)
    assert final.state == "completed" and final.resumed_from_frame == 2000
    [fallback] = final.checkpoint_fallbacks
    assert "is damaged" in fallback["note"] and fallback["resumed_from_frame"] == 2000
    assert status(out)["checkpoint_fallbacks"] == list(final.checkpoint_fallbacks)
    assert (out / checkpoint.DAMAGED).is_dir()  # kept for inspection, out of the way
    assert not (out / checkpoint.PREVIOUS).exists()  # a finished trial keeps one checkpoint
    pd.testing.assert_frame_equal(metrics(out), tiny_reference)

    # both intact copies damaged: a restart from frame 0, with the metrics truncated to match
    again = tmp_path / "again"
    interrupted_trial(again)
    damage(again / checkpoint.LATEST)
    damage(again / checkpoint.PREVIOUS)
    final = run_trial(build_config(TINY), again)
    assert final.state == "completed" and final.resumed_from_frame is None
    assert "restarts from frame 0" in final.checkpoint_fallbacks[-1]["note"]
    pd.testing.assert_frame_equal(metrics(again), tiny_reference)


def test_torn_last_metrics_line_is_dropped_on_resume(
    tmp_path: Path, tiny_reference: pd.DataFrame, interrupted_trial: Callable[[Path], None]
) -> None:
    out = tmp_path / "trial"
    interrupted_trial(out)
    with (out / "metrics.csv").open("a") as handle:
        handle.write("3600,12.5,0.")  # a crash in mid-row: no newline
    assert run_trial(build_config(TINY), out).state == "completed"
    pd.testing.assert_frame_equal(metrics(out), tiny_reference)


def test_sigkill_during_a_checkpoint_write_loses_nothing(tmp_path: Path, tiny_reference: pd.DataFrame) -> None:
    """The trial process is killed while ``checkpoint.tmp/`` exists (a write under way) after its first
    checkpoint; the rerun resumes from an intact checkpoint and ends with the uninterrupted numbers."""
    out = tmp_path / "trial"
    args = [f"{k}={v}" for k, v in TINY.items()] + [f"out={out}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.train", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not (out / checkpoint.LATEST).exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    while not (out / checkpoint.PARTIAL).exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.0005)
    writing = (out / checkpoint.PARTIAL).exists()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert writing, f"the trial ended before its second checkpoint write: {process.stderr.read().decode()[-2000:]}"
    final = run_trial(build_config(TINY), out)
    assert final.state == "completed" and final.resumed_from_frame in (1000, 2000)
    assert not (out / checkpoint.PARTIAL).exists()
    pd.testing.assert_frame_equal(metrics(out), tiny_reference)


def test_old_format_is_refused_with_a_message_and_converted_on_request(tmp_path: Path) -> None:
    """A pre-#11 checkpoint (a pickle read with weights_only=False) is never loaded implicitly."""
    out = tmp_path / "trial"
    run_trial(build_config({**TINY, "num_frames": 2000}), out)
    state = checkpoint.load(out / checkpoint.LATEST)
    legacy = tmp_path / "legacy"
    (legacy / checkpoint.LATEST).mkdir(parents=True)
    torch.save(state, legacy / checkpoint.LATEST / checkpoint.STATE_FILE)  # no manifest, numpy inside
    found = checkpoint.load_latest(legacy)
    assert found.state is None and "python -m agent.checkpoint upgrade" in found.notes[0]
    assert (legacy / checkpoint.DAMAGED / checkpoint.STATE_FILE).exists()  # set aside, not deleted
    (legacy / checkpoint.DAMAGED).rename(legacy / checkpoint.LATEST)
    upgrade = subprocess.run(
        [sys.executable, "-m", "agent.checkpoint", "upgrade", str(legacy)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert upgrade.returncode == 0 and "1 checkpoint(s) converted" in upgrade.stdout, upgrade.stderr
    assert checkpoint.load_latest(legacy).state["frame"] == state["frame"] == 1000


def _as_older_layout(out: Path) -> None:
    """The trial's checkpoints as the worker wrote them before Q-bias measurements of their own were kept."""
    owner = checkpoint.read_manifest(out / checkpoint.LATEST)["owner"]
    states = [checkpoint.load(out / name) for name in (checkpoint.PREVIOUS, checkpoint.LATEST)]
    for name in (checkpoint.PREVIOUS, checkpoint.LATEST):
        shutil.rmtree(out / name)
    for state in states:  # oldest first: save() keeps the one before as the previous checkpoint
        old = {key: value for key, value in state.items() if key not in ("next_q_bias_frame", "q_bias_pending")}
        checkpoint.save(out, old, old["frame"], old["step"], owner=owner)


def test_an_older_layout_is_refused_in_one_line_and_resumes_exactly_once_upgraded(
    tmp_path: Path,
    tiny_reference: pd.DataFrame,
    interrupted_trial: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "trial"
    interrupted_trial(out)
    _as_older_layout(out)
    before = status(out)
    overrides = tmp_path / "tiny.yaml"
    overrides.write_text(json.dumps(TINY))  # YAML
    capsys.readouterr()
    assert main([f"config={overrides}", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(out) in err and f"python -m agent.checkpoint upgrade {out}" in err
    assert status(out) == before and not (out / checkpoint.DAMAGED).exists()  # the trial and its checkpoint kept

    assert checkpoint.main(["upgrade", str(out)]) == 0
    assert "1 checkpoint(s) converted" in capsys.readouterr().out
    assert not checkpoint.outdated(checkpoint.load(out / checkpoint.LATEST))
    final = run_trial(build_config(TINY), out)
    assert final.state == "completed" and final.resumed_from_frame == 3000
    pd.testing.assert_frame_equal(metrics(out), tiny_reference)
    assert checkpoint.main(["upgrade", str(out)]) == 0  # today's layout: nothing to convert
    assert "0 checkpoint(s) converted" in capsys.readouterr().out
