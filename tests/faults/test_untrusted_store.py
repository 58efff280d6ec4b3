"""A store that others can write into (issue #19, cases 1, 2 and 9): nothing planted in it runs, nothing is
written outside ``--out``, and a hostile or damaged file costs its trial (one warning line), never the store,
a traceback or a hang.  Real sweeps with a real local Ray where the driver is involved, real files otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent import store
from orchestrator import REPO_ROOT
from tests.orchestrator.orch_helpers import TINY_BASE


class _Planted:
    """A pickle that, when loaded, creates ``marker``: what an attacker plants as Ray's ``tuner.pkl``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_planted_ray_experiment_is_never_unpickled(tmp_path: Path) -> None:
    """Case 1: an experiment planted in ``<grid>/_ray/`` with the launch record the driver used to trust (its
    fingerprint is a hash of public inputs) and a malicious ``tuner.pkl``.  The sweep runs its trial from the
    store and the pickle is never loaded."""
    grid_path = tmp_path / "planted.yaml"
    grid_path.write_text(
        yaml.safe_dump(
            {
                "name": "planted",
                "base": TINY_BASE,
                "axes": {"bn_mode": ["TTETT"]},
                "tasks": ["cartpole_swingup"],
                "seeds": [1],
                "frames": 2000,
                "resources": {"cpu": 1},
                "max_failures": 0,
            }
        )
    )
    from orchestrator.grid import load_grid

    grid = load_grid(str(grid_path), "local")
    results = (tmp_path / "results").resolve()
    ray_root = results / "planted" / store.RAY_DIR
    experiment = ray_root / "sweep-29991231-235959"
    experiment.mkdir(parents=True)
    marker = tmp_path / "pwned"
    (experiment / "tuner.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    # the fingerprint as the driver computed it before issue #19: anyone who knows the grid can compute it
    blob = json.dumps(
        {
            "results": str(results),
            "wandb": None,
            "resources": grid.resources,
            "max_concurrent": grid.max_concurrent,
            "max_failures": grid.max_failures,
            "pack": grid.pack,
            "payload": "packs-v1",
        },
        sort_keys=True,
    )
    (ray_root / f"{experiment.name}.launch.json").write_text(
        json.dumps(
            {
                "experiment": experiment.name,
                "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16],
                "trials": [t.trial_id for t in grid.trials],
            }
        )
    )
    args = ["-m", "orchestrator.sweep", "--grid", str(grid_path), "--results", str(results)]
    done = _run([*args, "--no-wandb", "--no-figures", "--progress-every", "0"], tmp_path)
    assert not marker.exists(), "the planted tuner.pkl was unpickled"
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resuming the Ray experiment" not in done.stdout
    [trial] = grid.trials
    assert store.trial_state(store.trial_dir(results, "planted", trial.trial_id)) == store.COMPLETED
