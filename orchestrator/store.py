"""The result store: ``<results>/<grid>/<trial_id>/`` per trial, identified by content hashes.

A trial's id is a hash of its resolved config without the placement-only keys
(``device``, ``torch_threads``): the same trial run on another machine or with
another CPU/GPU share is the same trial, so its results are found and reused.
The cell id is the same hash without ``seed``: all seeds of one experimental
condition share it.  Whether a trial is done is read from the worker's own
``status.json``, never from Ray's experiment state, so skipping finished work
keeps working when the grid file changes between runs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

# Trial and cell ids are the worker's (agent.config): analysis reads them from the store without this package.
from agent.config import cell_id, config_digest, trial_id  # noqa: F401 - the store's ids, used as store.trial_id
from agent.sinks import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    FINISHED_STATUSES,
    STATUS_FILE,
    TRIAL_FILE,
    atomic_write_text,
    read_status,
)
from agent.sinks import trial_state as trial_state  # the status machine's reader, shared with analysis

RAY_DIR = "_ray"  # Ray Tune's experiment state, beside the trial directories
SWEEP_DIR = "_sweep"  # what each profile of the grid last asked for (trial list, grid text)
LOCK_FILE = ".sweep.lock"
CHECKPOINT_META = ".metadata.json"  # the frame of a checkpoint (ray.tune.Checkpoint.set_metadata writes it)
DONE_STATUSES = FINISHED_STATUSES


def grid_dir(results: Path, grid: str) -> Path:
    return Path(results) / grid


def trial_dir(results: Path, grid: str, tid: str) -> Path:
    return grid_dir(results, grid) / tid


def checkpoint_frame(out_dir: Path) -> int | None:
    """Frame of the trial's newest complete checkpoint (its manifest; for checkpoints written before issue
    #11, the marker the orchestrator writes beside it), if any."""
    from agent.checkpoint import frame_of

    frame = frame_of(Path(out_dir))
    if frame is not None:
        return frame
    try:
        return int(json.loads((Path(out_dir) / CHECKPOINT_DIR / CHECKPOINT_META).read_text())["frame"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_frame(out_dir: Path) -> int:
    """Frames a trial already has: all of them when finished, else where its checkpoint resumes."""
    status = read_status(Path(out_dir)) or {}
    if status.get("status") in DONE_STATUSES:
        return int(status.get("frame") or 0)
    return checkpoint_frame(out_dir) or 0


def is_done(out_dir: Path) -> bool:
    return trial_state(out_dir) in DONE_STATUSES


def write_trial_meta(out_dir: Path, meta: Mapping[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / TRIAL_FILE, json.dumps(dict(meta), indent=2, sort_keys=False) + "\n")


def read_trial_meta(out_dir: Path) -> dict[str, Any] | None:
    """trial.json, or None when missing or unreadable (it only describes the trial: nothing depends on it)."""
    try:
        meta = json.loads((Path(out_dir) / TRIAL_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


# ------------------------------------------------------------------ measured rates
def _rate_key(config: Mapping[str, Any]) -> tuple:
    """What a frame rate depends on most: observation type, network width, batch, device, threads."""
    device = "cuda" if str(config.get("device", "cpu")).startswith("cuda") else "cpu"
    return (config.get("obs_type"), config.get("hidden_dim"), config.get("batch_size"), device,
            config.get("torch_threads"))


def pack_size_of(out_dir: Path, status: Mapping[str, Any] | None = None) -> int:
    """Members of the pack a finished trial ran in: trial.json's ``pack_size`` (status.json's if the worker
    records one); 1 for trials run before packing existed."""
    for source in (status or {}, read_trial_meta(Path(out_dir)) or {}):
        try:
            size = int(source.get("pack_size") or 0)
        except (TypeError, ValueError):
            continue
        if size >= 1:
            return size
    return 1


def measured_rates(results_root: Path, configs: Iterable[Mapping[str, Any]]) -> dict[tuple, tuple[float, int]]:
    """Median frames/s per member of finished trials in the whole store, for the rate keys the configs need.

    Returns {(rate_key, pack_size): (frames_per_s, n_trials)}: a trial that trained in a pack of K
    measured the rate of one member at pack size K (its frames over its wall time).  Only finished
    trials of at least 2000 frames count: start-up dominates shorter ones.
    """
    wanted = {_rate_key(c) for c in configs}
    found: dict[tuple, list[float]] = {}
    root = Path(results_root)
    if not root.is_dir():
        return {}
    for status_path in root.glob(f"*/*/{STATUS_FILE}"):
        try:
            status = json.loads(status_path.read_text())
            if status.get("status") not in DONE_STATUSES:
                continue
            frames, wall = float(status.get("frame", 0)), float(status.get("wall_time_s", 0))
            if frames < 2000 or wall <= 0:
                continue
            config = yaml.safe_load((status_path.parent / CONFIG_FILE).read_text()) or {}
        except (OSError, ValueError, yaml.YAMLError):
            continue
        key = _rate_key(config)
        if key in wanted:
            found.setdefault((key, pack_size_of(status_path.parent, status)), []).append(frames / wall)
    return {key: (statistics.median(rates), len(rates)) for key, rates in found.items()}


# Reference rates (frames/s per trial, updates and evaluation included) used when the
# store has no finished trial of the same kind.  Hidden 256 on CPU was measured on the
# 2-core development machine (40k frames of the local critic_i_mode profile: 221 s of CPU
# time); 32 from the smoke trials; 1024 is derived (updates 8-10x slower than at 256);
# the GPU number is DrQ-v2's published speed on one V100-class GPU (SPEC §1).
REFERENCE_RATES = {
    ("states", "cpu"): {32: 700.0, 256: 180.0, 1024: 35.0},
    ("pixels", "cpu"): {1024: 2.0},
    ("states", "cuda"): {1024: 300.0},
    ("pixels", "cuda"): {1024: 85.0},
}


def reference_rate(config: Mapping[str, Any]) -> float:
    """Interpolated reference frames/s (log-log in hidden width) for configs the store has not seen."""
    device = "cuda" if str(config.get("device", "cpu")).startswith("cuda") else "cpu"
    table = REFERENCE_RATES.get((config.get("obs_type", "pixels"), device), REFERENCE_RATES[("pixels", "cpu")])
    hidden = float(config.get("hidden_dim", 1024))
    points = sorted(table.items())
    if len(points) == 1 or hidden <= points[0][0]:
        return points[0][1] if hidden <= points[0][0] else points[-1][1]
    if hidden >= points[-1][0]:
        return points[-1][1]
    for (h0, r0), (h1, r1) in zip(points, points[1:], strict=False):
        if h0 <= hidden <= h1:
            t = (math.log(hidden) - math.log(h0)) / (math.log(h1) - math.log(h0))
            return math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))
    return points[-1][1]
