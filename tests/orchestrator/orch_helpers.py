"""Helpers for the orchestrator tests: tiny grids, in-process CLI runs, isolated W&B environments.

(A uniquely named module rather than conftest imports: test directories are not packages here.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator import REPO_ROOT

# The smallest trial that still exercises every part of the worker: a seed phase, updates,
# two evaluations with Q-bias, log rows and two checkpoints (cartpole episodes are 1000 frames).
TINY_BASE: dict[str, Any] = {
    "obs_type": "states",
    "hidden_dim": 32,
    "feature_dim": 16,
    "batch_size": 32,
    "num_seed_frames": 1000,
    "num_expl_steps": 500,
    "eval_every_frames": 2000,
    "num_eval_episodes": 1,
    "log_every_frames": 500,
    "checkpoint_every_frames": 1000,
    "q_bias_max_states": 100,
}


def grid_dict(
    name: str, modes: Sequence[str] = ("TTTTT", "TTETT"), seeds: Sequence[int] = (1,), frames: int = 2000, **extra: Any
) -> dict[str, Any]:
    grid: dict[str, Any] = {
        "name": name,
        "base": dict(TINY_BASE),
        "axes": {"bn_mode": list(modes)},
        "tasks": ["cartpole_swingup"],
        "seeds": list(seeds),
        "frames": frames,
        "resources": {"cpu": 1},
        "max_failures": 0,
    }
    grid.update(extra)
    return grid


def write_grid(directory: Path, filename: str, grid: dict[str, Any]) -> Path:
    path = directory / filename
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``python -m orchestrator.sweep ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from orchestrator.sweep import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wandb_env(root: Path) -> dict[str, str]:
    """W&B's own config/cache/data directories under ``root`` (inherited by Ray workers started afterwards)."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for key, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        (root / sub).mkdir(parents=True, exist_ok=True)
        env[key] = str(root / sub)
    return env


def trial_dirs(results: Path, grid: str) -> list[Path]:
    return sorted(p for p in (results / grid).iterdir() if (p / "trial.json").exists())


def subprocess_env(tmp: Path) -> dict[str, str]:
    """Environment for a sweep run as a separate process (own Ray, isolated W&B)."""
    env = dict(os.environ)
    env.update(wandb_env(tmp / "wandb_home"))
    env["WANDB_DIR"] = str(tmp / "wandb_dir")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("RAY_ADDRESS", None)
    return env
