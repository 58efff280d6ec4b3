"""W&B online with its server unreachable costs a trial at most the start-up bound, never its results (issue #11).

A real sweep driver (``python -m orchestrator.sweep``, its own local Ray) runs one tiny trial with
``WANDB_MODE=online``, a fake 40-character API key and ``WANDB_BASE_URL`` pointing at a local TCP port that
accepts connections and never answers (a socket bound and listening, never accepting): the W&B server of an
outage that does not refuse, the slow case.  The start-up bound is lowered to ``TIMEOUT_S`` through the
driver's ``BNSWEEP_WANDB_INIT_TIMEOUT``.  Real W&B, no mocks: the trial must wait at most about the bound,
then log to an offline run with its own run id, record it in ``wandb_offline.json``, and the sweep's summary
must print the ``wandb sync`` command for it.  Before the bound, each such trial waited ≈ 2 min 10 s.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))  # the sweep tests' helpers

from orch_helpers import grid_dict, subprocess_env, trial_dirs, write_grid  # noqa: E402

from orchestrator import REPO_ROOT  # noqa: E402
from orchestrator.wandb_offline import read_run  # noqa: E402
from orchestrator.wandb_sink import INIT_TIMEOUT_ENV, OFFLINE_FALLBACK_FILE, run_id  # noqa: E402

TIMEOUT_S = 5
# Start-up bound + training a 2000-frame trial (≈ 10-30 s on the busy 2-core machine) + switching to offline
# (≈ 3 s); the unbounded wait this replaces was ≈ 130 s.
TRIAL_BOUND_S = 90


def test_unreachable_server_costs_a_bounded_wait_and_the_run_goes_offline(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # connections complete in the kernel's backlog and are never answered
    try:
        grid_path = write_grid(tmp_path, "outage.yaml", grid_dict("outage", modes=["TTETT"]))
        results = tmp_path / "results"
        env = subprocess_env(tmp_path)
        for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
            env.pop(key, None)
        env.update(
            {
                "WANDB_MODE": "online",
                "WANDB_API_KEY": "0123456789abcdef" * 2 + "01234567",
                "WANDB_BASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
                INIT_TIMEOUT_ENV: str(TIMEOUT_S),
            }
        )
        assert len(env["WANDB_API_KEY"]) == 40
        started = time.time()
        driver = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.sweep",
                "--grid",
                str(grid_path),
                "--results",
                str(results),
                "--no-figures",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
        sweep_s = time.time() - started
    finally:
        silent.close()
    output = driver.stdout + driver.stderr
    assert driver.returncode == 0, output
    assert "Traceback" not in output, output
    assert "1 trials: 1 completed" in output, output

    [directory] = trial_dirs(results, "outage")
    status = json.loads((directory / "status.json").read_text())
    assert status["status"] == "completed"
    with (directory / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and int(rows[-1]["frame"]) == 2000 and any(r.get("eval/episode_return") for r in rows)

    # the trial's wall time, W&B start-up included: from the trainable's start to the worker's final status
    meta = json.loads((directory / "trial.json").read_text())
    trial_s = (directory / "status.json").stat().st_mtime - datetime.fromisoformat(meta["started_at"]).timestamp()
    print(f"outage trial: {trial_s:.0f} s from start to final status; sweep {sweep_s:.0f} s in all")
    assert trial_s < TRIAL_BOUND_S, output

    fallback = json.loads((directory / OFFLINE_FALLBACK_FILE).read_text())
    [entry] = fallback["runs"]
    assert entry["timeout_s"] == TIMEOUT_S and entry["waited_s"] < TIMEOUT_S + 30, entry
    offline_dir = Path(entry["offline_dir"])
    assert offline_dir.is_dir() and offline_dir.name.startswith("offline-run-")
    run = read_run(offline_dir)  # the run's own files: same run id, its config and every logged row
    assert run["run"]["run_id"] == run_id("outage", directory.name) == entry["run_id"]
    assert run["config"]["trial_id"] == directory.name
    assert [r["frame"] for r in run["history"]] == [int(r["frame"]) for r in rows]

    assert f"wandb sync {offline_dir}" in driver.stdout, output
    assert output.count("warning: W&B") == 1, output  # one warning, then quiet
    assert os.environ.get("WANDB_MODE") != "online"  # the test changed only the driver's environment
