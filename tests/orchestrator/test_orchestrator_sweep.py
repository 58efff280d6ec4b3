"""End to end on a real local Ray with real tiny worker trials and real offline W&B.

One Ray instance serves the whole module (``local_ray``); the sweeps run in this
process through the CLI entry point, except the interruption test, which needs a
driver process it can interrupt.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from orch_helpers import grid_dict, run_cli, subprocess_env, trial_dirs, write_grid

from contract import store
from orchestrator import REPO_ROOT
from orchestrator.grid import load_grid
from orchestrator.wandb_offline import read_run

TRIAL_KEYS = {"grid", "trial_id", "cell_id", "cell_name", "seed", "task", "axes"}


def _metrics(directory: Path) -> list[dict[str, str]]:
    with (directory / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _status(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "status.json").read_text())


def _mtimes(directories: list[Path]) -> dict[str, float]:
    return {d.name: (d / "status.json").stat().st_mtime_ns for d in directories}


@pytest.fixture(scope="module")
def first_run(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The 2-trial grid run once; several tests inspect what it left."""
    root = tmp_path_factory.mktemp("e2e")
    wandb_dir = root / "wandb_dir"
    wandb_dir.mkdir()
    grid_path = write_grid(root, "e2e.yaml", grid_dict("e2e", wandb={"project": "bnsweep-tests", "tags": ["e2e-test"]}))
    from orchestrator.sweep import main

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(wandb_dir))
        started = time.time()
        code = main(
            [
                "--grid",
                str(grid_path),
                "--results",
                str(root / "results"),
                "--figures",
                str(root / "figures"),
                "--progress-every",
                "5",
            ]
        )
    return {
        "root": root,
        "results": root / "results",
        "grid_path": grid_path,
        "wandb_dir": wandb_dir,
        "code": code,
        "out": out.getvalue(),
        "wall": time.time() - started,
    }


def test_two_trial_grid_end_to_end(first_run: dict[str, Any]) -> None:
    out = first_run["out"]
    assert first_run["code"] == 0, out
    assert "2 trials: 2 completed, 0 diverged, 0 failed, 0 unfinished" in out
    assert out.count("  start    ") == 2 and "completed [2/2]" in out  # the live view
    assert "figures:" in out and "wandb sync" in out
    dirs = trial_dirs(first_run["results"], "e2e")
    assert len(dirs) == 2
    cells = set()
    for directory in dirs:
        meta = json.loads((directory / "trial.json").read_text())
        assert TRIAL_KEYS <= set(meta) and meta["grid"] == "e2e" and meta["trial_id"] == directory.name
        config = yaml.safe_load((directory / "config.yaml").read_text())
        assert store.trial_id(config) == directory.name and store.cell_id(config) == meta["cell_id"]
        assert meta["axes"] == {"bn_mode": config["bn_mode"]} and meta["cell_name"] == f"bn_mode={config['bn_mode']}"
        assert config["torch_threads"] == 1 and config["device"] == "cpu"  # placement from resources.cpu
        status = _status(directory)
        assert status["status"] == "completed" and status["frame"] == 2000
        rows = _metrics(directory)
        assert int(rows[-1]["frame"]) == 2000 and any(r["eval/episode_return"] for r in rows)
        cells.add(meta["cell_id"])
    assert len(cells) == 2
    # Ray's own experiment state sits beside the trials, with a record of what it ran (never restored: #19)
    launches = list((first_run["results"] / "e2e" / store.RAY_DIR).glob("*.launch.json"))
    assert len(launches) == 1
    assert sorted(json.loads(launches[0].read_text())["trials"]) == sorted(d.name for d in dirs)


def test_wandb_offline_runs_read_back(first_run: dict[str, Any]) -> None:
    runs = sorted((first_run["wandb_dir"] / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    metas = {json.loads((d / "trial.json").read_text())["trial_id"]: d for d in trial_dirs(first_run["results"], "e2e")}
    for run_dir in runs:
        run = read_run(run_dir)
        config = run["config"]
        directory = metas[config["trial_id"]]
        meta = json.loads((directory / "trial.json").read_text())
        assert run["run"]["group"] == meta["cell_name"] and run["run"]["job_type"] == "e2e"
        assert run["run"]["project"] == "bnsweep-tests" and "e2e-test" in run["run"]["tags"]
        mode = config["bn_mode"]
        assert [
            config[f"bn_mode.{step}"] for step in ("actor_i", "actor_ii", "critic_i", "critic_ii", "critic_iii")
        ] == list(mode)
        assert config["axes.bn_mode"] == mode and config["cell_id"] == meta["cell_id"] and config["seed"] == 1
        # every logged row is there, with the frame as its x value
        disk = [
            (int(r["frame"]), float(r["eval/episode_return"])) for r in _metrics(directory) if r["eval/episode_return"]
        ]
        logged = [(row["frame"], row["eval/episode_return"]) for row in run["history"] if "eval/episode_return" in row]
        assert [f for f, _ in logged] == [f for f, _ in disk]
        assert [v for _, v in logged] == pytest.approx([v for _, v in disk])
        assert any("losses/critic" in row for row in run["history"])
        assert run["summary"]["status"] == "completed"


def test_rerun_launches_nothing(first_run: dict[str, Any], capsys: pytest.CaptureFixture, isolated_wandb: Path) -> None:
    dirs = trial_dirs(first_run["results"], "e2e")
    before = _mtimes(dirs)
    ray_dir = first_run["results"] / "e2e" / store.RAY_DIR
    launches = sorted(ray_dir.glob("*.launch.json"))
    code, out, _ = run_cli(
        capsys, "--grid", str(first_run["grid_path"]), "--results", str(first_run["results"]), "--no-figures"
    )
    assert code == 0
    assert "2 already done, 0 to run" in out and "0 launched, 2 already done and skipped" in out
    assert "starting Ray experiment" not in out and "resuming" not in out
    assert _mtimes(dirs) == before and sorted(ray_dir.glob("*.launch.json")) == launches
    assert not list(isolated_wandb.rglob("offline-run-*"))  # no W&B run either


def test_extended_grid_runs_only_the_new_trial(
    first_run: dict[str, Any], capsys: pytest.CaptureFixture, isolated_wandb: Path
) -> None:
    old = trial_dirs(first_run["results"], "e2e")
    before = _mtimes(old)
    extended = write_grid(
        first_run["root"], "e2e_extended.yaml", grid_dict("e2e", modes=["TTTTT", "TTETT", "ETETT"])
    )  # same grid name, one more value
    code, out, _ = run_cli(capsys, "--grid", str(extended), "--results", str(first_run["results"]), "--no-figures")
    assert code == 0, out
    assert "3 trials, 2 already done, 1 to run" in out and "1 launched" in out
    dirs = trial_dirs(first_run["results"], "e2e")
    assert len(dirs) == 3 and all(_status(d)["status"] == "completed" for d in dirs)
    assert _mtimes(old) == before  # the finished trials were not touched
    new = [d for d in dirs if d.name not in before]
    assert json.loads((new[0] / "trial.json").read_text())["axes"] == {"bn_mode": "ETETT"}
    launches = sorted((first_run["results"] / "e2e" / store.RAY_DIR).glob("*.launch.json"))
    assert json.loads(launches[-1].read_text())["trials"] == [new[0].name]


def test_failed_trial_is_reported_and_the_sweep_goes_on(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    grid_path = write_grid(tmp_path, "fails.yaml", grid_dict("fails"))
    broken = next(t for t in load_grid(str(grid_path), "local").trials if t.config["bn_mode"] == "TTTTT")
    from agent import checkpoint as checkpoints

    trial_dir = store.trial_dir(tmp_path / "results", "fails", broken.trial_id)
    # An intact checkpoint (its hash matches) of something else: the worker cannot resume from it. (A damaged
    # one no longer fails a trial: it falls back, issue #11.) Checkpoint writes never make a trial's directory
    # (issue #19: it may have been moved away): the trial's first run would have.
    trial_dir.mkdir(parents=True)
    checkpoints.save(trial_dir, {"frame": 1000, "step": 500}, 1000, 500)
    checkpoint = trial_dir / checkpoints.LATEST
    code, out, _ = run_cli(
        capsys,
        "--grid",
        str(grid_path),
        "--results",
        str(tmp_path / "results"),
        "--no-wandb",
        "--no-figures",
        "--max-failures",
        "0",
    )
    assert code == 1
    assert "1 completed, 0 diverged, 1 failed" in out and "failed: bn_mode=TTTTT seed 1" in out
    assert "FAILED" in out  # the live view says so when it happens
    status = _status(checkpoint.parent)
    assert status["status"] == "failed" and "KeyError" in status["error"] + status.get("traceback", "")
    other = [d for d in trial_dirs(tmp_path / "results", "fails") if d.name != broken.trial_id]
    assert _status(other[0])["status"] == "completed"


# Long enough that the driver is still training when it is stopped past its 2,000-frame checkpoint (the stop
# comes within a poll of 0.3 s), and that the rerun has frames left to train after resuming.
LONG_FRAMES = 5000


def test_interrupted_sweep_continues_from_checkpoints(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    grid_path = write_grid(tmp_path, "long.yaml", grid_dict("long", modes=["TTETT"], frames=LONG_FRAMES))
    results = tmp_path / "results"
    trial = load_grid(str(grid_path), "local").trials[0]
    directory = store.trial_dir(results, "long", trial.trial_id)
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.sweep",
            "--grid",
            str(grid_path),
            "--results",
            str(results),
            "--no-wandb",
            "--no-figures",
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # interrupt once a checkpoint beyond the first episode exists
            meta = directory / "checkpoint" / ".metadata.json"
            if meta.exists() and json.loads(meta.read_text()).get("frame", 0) >= 2000:
                break
            assert driver.poll() is None, driver.stdout.read() if driver.stdout else ""
            time.sleep(0.3)
        else:
            pytest.fail("no checkpoint within 240 s")
        driver.send_signal(signal.SIGINT)  # what Ctrl-C does
        output, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 1, output
    assert "interrupted" in output and "0 completed" in output and "1 unfinished" in output
    assert _status(directory)["status"] in ("running", "interrupted")

    code, out, _ = run_cli(capsys, "--grid", str(grid_path), "--results", str(results), "--no-wandb", "--no-figures")
    assert code == 0, out
    # a new Ray experiment; the trial resumes from its own checkpoint in the store (Ray's state is never restored)
    assert "1 to run" in out and "resuming the Ray experiment" not in out and "starting Ray experiment" in out
    status = _status(directory)
    assert status["status"] == "completed" and status["resumed_from_frame"] >= 2000
    frames = [int(r["frame"]) for r in _metrics(directory)]
    assert frames == sorted(frames) and frames[-1] == LONG_FRAMES


def test_profile_the_cluster_cannot_run_launches_nothing(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_grid(tmp_path, "gpu.yaml", grid_dict("gpu", resources={"cpu": 1, "gpu": 0.5}))
    results = tmp_path / "results"
    code, _, err = run_cli(capsys, "--grid", str(path), "--results", str(results), "--no-wandb", "--no-figures")
    assert code == 2
    assert "needs 1 CPU and 0.5 GPU" in err and "no node of this Ray cluster has that" in err
    assert "nothing was launched" in err
    assert sorted(p.name for p in (results / "gpu").iterdir()) == [store.LOCK_FILE]  # no trial, no Ray state
