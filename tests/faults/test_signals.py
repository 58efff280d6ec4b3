"""Stopping from outside (issue #19, case 7): SIGTERM is what schedulers and ``timeout`` send, SIGINT is Ctrl-C;
either one stops a trial or a sweep with one line, every member ``interrupted``, and the rerun finishes with the
numbers of an uninterrupted run.  Real processes, real signals, a real local Ray for the sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from agent import checkpoint
from contract import store
from orchestrator import REPO_ROOT
from tests.faults.test_checkpoint_faults import TINY, metrics


def _wait_for_checkpoint(out: Path, process: subprocess.Popen, frame: int = 1000, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        manifest = checkpoint.read_manifest(out / checkpoint.LATEST)
        if manifest and manifest["frame"] >= frame:
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    pytest.fail(f"no checkpoint of frame {frame} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_agent_train_stops_in_one_line_on_sigterm_or_ctrl_c(
    tmp_path: Path, signum: int, tiny_reference: pd.DataFrame
) -> None:
    """No traceback, exit 128 + the signal, status ``interrupted``; a second signal while it writes its final
    status is ignored; the same command again finishes with the uninterrupted numbers."""
    out = tmp_path / "trial"
    args = [sys.executable, "-m", "agent.train", *(f"{k}={v}" for k, v in TINY.items()), f"out={out}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(out, process)
    process.send_signal(signum)
    time.sleep(0.05)
    if process.poll() is None:
        process.send_signal(signum)  # impatient: a second one while the first unwinds
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("interrupted (") and "run the same command again" in err
    status = store.read_status(out)
    assert status.state == store.INTERRUPTED and status.checkpoint_frame and status.checkpoint_frame >= 1000
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(metrics(out), tiny_reference)


# ------------------------------------------------------------------ a sweep of a pack of 2
def _pack_grid(tmp_path: Path) -> Path:
    import yaml

    from tests.orchestrator.orch_helpers import grid_dict

    grid = grid_dict("stop", modes=("TTTTT", "TTETT"), frames=10000, pack=2, max_failures=0)
    path = tmp_path / "stop.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _sweep(grid: Path, results: Path) -> list[str]:
    command = ["-m", "orchestrator.sweep", "--grid", str(grid), "--results", str(results), "--no-wandb"]
    return [sys.executable, *command, "--no-figures", "--progress-every", "0"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    grid = _pack_grid(tmp)
    done = subprocess.run(_sweep(grid, tmp / "results"), cwd=tmp, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return {d.name: metrics(d) for d in (tmp / "results" / "stop").iterdir() if (d / "config.yaml").exists()}


@pytest.mark.faults_slow
@pytest.mark.parametrize(
    "signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)], ids=["sigterm", "ctrl-c-twice"]
)
def test_a_stopped_sweep_marks_every_member_interrupted_and_a_rerun_matches(
    tmp_path: Path, signals: tuple[int, ...], uninterrupted: dict[str, pd.DataFrame]
) -> None:
    grid, results = _pack_grid(tmp_path), tmp_path / "results"
    driver = subprocess.Popen(
        _sweep(grid, results), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # both members past their second checkpoint
            trials = [d for d in (results / "stop").glob("*/") if (d / "config.yaml").exists()]
            frames = [checkpoint.frame_of(d) or 0 for d in trials]
            if len(frames) == 2 and min(frames) >= 2000:
                break
            assert driver.poll() is None, driver.communicate()[0][-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the pack did not checkpoint within 300 s")
        for signum in signals:
            driver.send_signal(signum)
            time.sleep(0.3)
        output, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode in (1, 130), output[-3000:]
    assert "Traceback" not in output and "Tuner.restore(" not in output, output[-3000:]
    dirs = [d for d in (results / "stop").iterdir() if (d / "config.yaml").exists()]
    states = {d.name: json.loads((d / "status.json").read_text())["status"] for d in dirs}
    assert len(states) == 2 and set(states.values()) == {store.INTERRUPTED}, (states, output[-2000:])
    if signals == (signal.SIGTERM,):
        assert "2 trials:" in output and "unfinished" in output  # the summary, as after one Ctrl-C
    again = subprocess.run(_sweep(grid, results), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    for directory in dirs:
        pd.testing.assert_frame_equal(metrics(directory), uninterrupted[directory.name])
