"""Faults of the result store as a whole (issue #11): a full disk, a read-only results directory, an
unreadable trial.json, and Ray's intact copy of a checkpoint the store damaged.  Real sweeps (a real local
Ray, started by the driver process), real filesystems (tmpfs mounts), tiny trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from agent import checkpoint
from orchestrator import REPO_ROOT
from tests.orchestrator.orch_helpers import TINY_BASE


def write_grid(directory: Path, name: str, frames: int) -> Path:
    grid = {
        "name": name,
        "base": TINY_BASE,
        "axes": {"bn_mode": ["TTTTT", "TTETT"]},
        "tasks": ["cartpole_swingup"],
        "seeds": [1],
        "frames": frames,
        "resources": {"cpu": 1},
        "max_concurrent": 2,
        "max_failures": 0,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def sweep(grid: Path, results: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.sweep",
            "--grid",
            str(grid),
            "--results",
            str(results),
            "--no-figures",
            "--progress-every",
            "0",
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[callable]:
    """``mount(size, read_only=False)``: a fresh tmpfs under tmp_path (root with mount rights needed, as on
    the dev and CI machines); every mount is taken down afterwards."""
    mounted: list[Path] = []

    def make(size: str, read_only: bool = False) -> Path:
        point = tmp_path / f"fs{len(mounted)}"
        point.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({done.stderr.strip()}): the store-fault tests need root with mount rights"
            )
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves ``leave_bytes`` free on ``directory``'s filesystem."""
    stat = os.statvfs(directory)
    ballast = directory / "ballast"
    ballast.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))
    return ballast


def statuses(results: Path, grid: str) -> dict[str, dict]:
    return {
        d.name: json.loads((d / "status.json").read_text())
        for d in (results / grid).iterdir()
        if (d / "status.json").exists()
    }


def no_traceback(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-4000:]


@pytest.mark.faults_slow
@pytest.mark.parametrize("free_kib", [200, 500])  # the disk fills in different writes: the worker's or Ray's
def test_full_disk_stops_the_sweep_in_one_line_and_a_rerun_finishes(tmp_path: Path, mount, free_kib: int) -> None:
    results = mount("4m")
    grid = write_grid(tmp_path, "full", frames=4000)
    ballast = fill(results, leave_bytes=free_kib * 1024)  # room to start, not to finish: checkpoints fill it
    done = sweep(grid, results, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    no_traceback(done)
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "the result store refused a write: could not write" in line and "No space left on device" in line
    assert str(results) in line and "run the same command again" in line
    assert "error:" not in done.stdout
    states = statuses(results, "full")
    assert states and all(s["status"] in ("completed", "interrupted") for s in states.values()), states
    before = {name: (results / "full" / name / "metrics.csv").read_text() for name in states}

    ballast.unlink()  # space freed: the same command finishes every trial
    done = sweep(grid, results, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    no_traceback(done)
    for name, status in statuses(results, "full").items():
        assert status["status"] == "completed" and status["frame"] == 4000
        rows = pd.read_csv(results / "full" / name / "metrics.csv")
        assert rows["frame"].is_monotonic_increasing and not rows.duplicated(subset=None).any()
        kept = before.get(name, "").splitlines()
        resumed_at = status.get("resumed_from_frame") or 0
        old = [line for line in kept[1:] if int(float(line.split(",")[0])) <= resumed_at]
        assert (results / "full" / name / "metrics.csv").read_text().splitlines()[1 : len(old) + 1] == old

    # an unreadable trial.json of a finished trial: the rerun still skips it, analysis still reads the store
    first = sorted((results / "full").glob("*/trial.json"))[0]
    first.write_bytes(b"\xff\xfe\x00 not json")
    done = sweep(grid, results, tmp_path)
    assert done.returncode == 0 and "2 already done, 0 to run" in done.stdout, done.stdout + done.stderr
    no_traceback(done)
    from analysis.store import load_store

    trials = load_store(results).trials
    assert sorted(trials["status"]) == ["completed", "completed"]


def test_read_only_results_directory_is_one_line_and_nothing_starts(tmp_path: Path, mount) -> None:
    results = mount("1m", read_only=True)
    done = sweep(write_grid(tmp_path, "ro", frames=2000), results, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    no_traceback(done)
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "Read-only file system" in line and str(results) in line


def test_a_damaged_store_checkpoint_is_replaced_by_rays_intact_copy(tmp_path: Path) -> None:
    """The reporter's case: the store's checkpoint/state.pt overwritten while Ray holds an intact copy."""
    from ray import tune

    from orchestrator.trainable import restore_ray_checkpoint

    trial = tmp_path / "aaaaaaaaaaaa"
    trial.mkdir()  # save() never makes a trial directory (issue #19)
    checkpoint.save(trial, {"label": "intact", "frame": 3000, "step": 1500}, 3000, 1500)
    ray_copy = tmp_path / "ray_copy"
    ray_copy.mkdir()
    import shutil

    shutil.copytree(trial / checkpoint.LATEST, ray_copy / trial.name)
    (trial / checkpoint.LATEST / checkpoint.STATE_FILE).write_bytes(os.urandom(100))
    note = restore_ray_checkpoint(trial, trial.name, tune.Checkpoint.from_directory(str(ray_copy)))
    assert note and "damaged" in note and "restored Ray's intact copy (frame 3000)" in note
    assert checkpoint.load(trial / checkpoint.LATEST)["label"] == "intact"
    assert (trial / checkpoint.DAMAGED).is_dir()
