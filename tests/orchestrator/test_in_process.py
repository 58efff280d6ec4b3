"""The single-machine fallback: a sweep without Ray (``--in-process``, issue #17 item 6) writes the same store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orch_helpers import grid_dict, subprocess_env, trial_dirs, write_grid

from contract import store
from orchestrator import REPO_ROOT

# A machine without Ray or W&B: importing either fails in this driver.
RAYLESS_DRIVER = (
    "import sys\n"
    "sys.modules['ray'] = None\n"
    "sys.modules['wandb'] = None\n"
    "from orchestrator.sweep import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _sweep(tmp_path: Path, grid: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["--grid", str(grid), "--results", str(tmp_path / "results"), "--figures", str(tmp_path / "figures")]
    return subprocess.run(
        [sys.executable, "-c", RAYLESS_DRIVER, *args, "--in-process", *extra],
        cwd=REPO_ROOT,
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_in_process_sweep_runs_the_plan_without_ray_into_the_same_store(tmp_path):
    grid = write_grid(tmp_path, "rayless.yaml", grid_dict("rayless", frames=1000))
    first = _sweep(tmp_path, grid, "--pack", "2")
    assert first.returncode == 0, first.stderr
    assert "pack 1/1" in first.stdout
    dirs = trial_dirs(tmp_path / "results", "rayless")
    assert len(dirs) == 2
    for directory in dirs:
        assert store.trial_state(directory) == store.COMPLETED
        meta = json.loads((directory / "trial.json").read_text())
        assert meta["grid"] == "rayless" and meta["trial_id"] == directory.name
        assert meta["runner"] == "in-process" and meta["pack_size"] == 2
        assert (directory / "metrics.csv").stat().st_size > 0
    assert any((tmp_path / "figures").rglob("*.png")), first.stdout  # the figures are drawn from that store
    # A rerun finds every trial done and starts nothing: the store decides, as with Ray.
    again = _sweep(tmp_path, grid)
    assert again.returncode == 0, again.stderr
    assert "2 already done, 0 to run" in again.stdout


def test_in_process_takes_no_cluster_address(tmp_path):
    grid = write_grid(tmp_path, "rayless.yaml", grid_dict("rayless", frames=1000))
    refused = _sweep(tmp_path, grid, "--address", "10.0.0.1:6379")
    assert refused.returncode == 2 and "--in-process runs on this machine without Ray" in refused.stderr
    assert not (tmp_path / "results").exists()
