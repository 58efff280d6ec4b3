"""Synthetic result stores with known answers, written in the worker's exact file format (used by conftest)."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from agent.metrics import COLUMNS, COVERAGE, EVAL_RETURN, Q_BIAS_MEAN, Q_BIAS_STD, STATE_COVERAGE, TRAIN_RETURN

BASE_CONFIG = {
    "task": "cartpole_swingup",
    "obs_type": "states",
    "num_frames": 3000,
    "seed": 1,
    "device": "cpu",
    "torch_threads": 1,
    "use_task_presets": True,
    "actor_norm": "batch_norm",
    "critic_norm": "batch_norm",
    "bn_mode": "TTETT",
    "buffer_mix_ratio": 0.0,
    "target_bn_stats": "independent",
    "optimizer": "adam",
    "lr": 1e-4,
    "sgd_momentum": 0.0,
    "hidden_dim": 32,
    "batch_size": 32,
    "nstep": 3,
    "stddev_schedule": "linear(1.0,0.1,100000)",
    "eval_every_frames": 1000,
    "log_every_frames": 1000,
}
ORIGIN = {"actor_norm": "none", "critic_norm": "none", "bn_mode": None}
LAYER_NORM = {"actor_norm": "layer_norm", "critic_norm": "layer_norm", "bn_mode": None}
# Figure tests check files, not numbers (tested elsewhere): few resamples and a low PNG resolution keep them fast.
FIGURE_REPS = 200
FIGURE_DPI = 60
FIGURE_ARGS = ["--reps", str(FIGURE_REPS), "--dpi", str(FIGURE_DPI)]
ALL_MODES = ["".join(p) for p in itertools.product("TE", repeat=5)]


def write_trial(
    root: Path,
    grid: str,
    name: str,
    returns: Sequence[float],
    *,
    status: str | None = "completed",
    every: int = 1000,
    q_bias: Sequence[float] | None = None,
    state_cells: Sequence[float] | None = None,
    meta: dict | None = None,
    error: str | None = None,
    **config,
) -> Path:
    """One trial directory: eval rows at 0, every, 2*every, ... with ``returns``; a training row after each.

    Coverage counts rise with the row index (``state_cells``, when given, sets coverage/state_cells per row)."""
    path = root / grid / name
    path.mkdir(parents=True, exist_ok=True)
    full = {**BASE_CONFIG, **config}
    (path / "config.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    with (path / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for i, value in enumerate(returns):
            frame = i * every
            if i:
                writer.writerow(
                    {
                        "frame": frame,
                        TRAIN_RETURN: value * 0.9,
                        COVERAGE: 100 * i + full["seed"],
                        STATE_COVERAGE: state_cells[i] if state_cells is not None else 50 * i + full["seed"],
                        "losses/critic": 1.0 / i,
                    }
                )
            bias = q_bias[i] if q_bias is not None else 0.1 * (len(returns) - i)
            writer.writerow(
                {
                    "frame": frame,
                    EVAL_RETURN: value,
                    Q_BIAS_MEAN: bias,
                    Q_BIAS_STD: abs(bias) / 2,
                    COVERAGE: 100 * i + full["seed"],
                    STATE_COVERAGE: state_cells[i] if state_cells is not None else 50 * i + full["seed"],
                }
            )
    if status is not None:
        last = (len(returns) - 1) * every
        body = {"status": status, "frame": last, "num_frames": full["num_frames"], "wall_time_s": 1.0}
        if error or status in ("diverged", "failed"):
            body["error"] = error or f"{status} at frame {last}"
        (path / "status.json").write_text(json.dumps(body))
    if meta is not None:
        (path / "trial.json").write_text(json.dumps(meta))
    return path


def _ramp(final: float, points: int = 4) -> list[float]:
    return [final * i / (points - 1) for i in range(points)]


def build_all_grids(root: Path) -> Path:
    """Every method.md §8 grid plus smoke, small but complete enough for each figure to draw something."""
    for seed in (1, 2):
        s = seed * 10.0
        # critic_i_mode: T vs E (rest T) vs Origin; one Origin seed diverged.
        write_trial(root, "critic_i_mode", f"T-{seed}", _ramp(300 + s), bn_mode="TTTTT", seed=seed)
        write_trial(
            root, "critic_i_mode", f"E-{seed}", _ramp(600 + s), bn_mode="TTETT", seed=seed, q_bias=[0.5, 0.2, 0.05, 0.0]
        )
        write_trial(
            root,
            "critic_i_mode",
            f"O-{seed}",
            _ramp(450 + s)[: 3 if seed == 2 else 4],
            status="diverged" if seed == 2 else "completed",
            seed=seed,
            **ORIGIN,
        )
        for mode in ALL_MODES:
            write_trial(
                root, "bn_modes", f"{mode}-{seed}", _ramp(200 + 10 * ALL_MODES.index(mode) + s), bn_mode=mode, seed=seed
            )
        write_trial(root, "bn_modes", f"origin-{seed}", _ramp(400 + s), seed=seed, **ORIGIN)
        for rho in (0.0, 0.25, 0.5, 1.0):
            write_trial(
                root,
                "buffer_mixing",
                f"rho{rho}-{seed}",
                _ramp(300 + 200 * rho + s),
                bn_mode="TTTTT",
                buffer_mix_ratio=rho,
                seed=seed,
            )
        write_trial(root, "buffer_mixing", f"mabn-{seed}", _ramp(650 + s), seed=seed)
        # target_bn_stats is a partial grid: "soft" has only a running seed 2 (no finished trial at all).
        for stat in ("independent", "copy"):
            write_trial(
                root, "target_bn_stats", f"{stat}-{seed}", _ramp(500 + s + len(stat)), target_bn_stats=stat, seed=seed
            )
        if seed == 2:
            write_trial(
                root, "target_bn_stats", "soft-2", _ramp(500)[:2], status="running", target_bn_stats="soft", seed=seed
            )
        for lr in (5e-5, 1e-4, 5e-4):
            for label, norm in (("origin", ORIGIN), ("ln", LAYER_NORM), ("mabn", {})):
                write_trial(
                    root, "learning_rate", f"{label}-{lr}-{seed}", _ramp(300 + 1e6 * lr + s), lr=lr, seed=seed, **norm
                )
        for opt, lr in (("adam", 1e-4), ("sgd", 1e-2)):
            for label, norm in (("origin", ORIGIN), ("mabn", {})):
                write_trial(
                    root,
                    "optimizer",
                    f"{label}-{opt}-{seed}",
                    _ramp(400 + (100 if opt == "adam" else 0) + s),
                    optimizer=opt,
                    lr=lr,
                    seed=seed,
                    **norm,
                )
        for label, norm in (("origin", ORIGIN), ("mabn", {})):
            write_trial(root, "exploration", f"{label}-{seed}", _ramp(500 + s), seed=seed, **norm)
        for task, scale in (("cartpole_swingup", 1.0), ("Hopper-v5", 3.0)):
            for label, norm in (("origin", ORIGIN), ("ln", LAYER_NORM), ("bn", {"bn_mode": "TTTTT"}), ("mabn", {})):
                final = scale * {"origin": 400, "ln": 500, "bn": 300, "mabn": 700}[label] + s
                write_trial(
                    root,
                    "normalization",
                    f"{task}-{label}-{seed}",
                    _ramp(final),
                    task=task,
                    seed=seed,
                    num_frames=3000,
                    **norm,
                )
        write_trial(root, "smoke", f"smoke-{seed}", _ramp(100 + s), seed=seed)
    # ... and it has a crashed trial and one that never started (config only).
    write_trial(
        root,
        "target_bn_stats",
        "copy-3",
        _ramp(100)[:2],
        status="failed",
        error="OSError: disk full",
        target_bn_stats="copy",
        seed=3,
    )
    pending = root / "target_bn_stats" / "independent-3"
    pending.mkdir()
    (pending / "config.yaml").write_text(yaml.safe_dump({**BASE_CONFIG, "seed": 3}))
    return root
