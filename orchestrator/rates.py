"""Frame rates for the planner's time estimates: measured from finished trials in the store, else reference
rates.  (Read from the store on disk through contract.store; nothing here writes it.)"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contract.store import FINISHED_STATUSES, STATUS_FILE, TrialStatus, read_config, read_status, read_trial_meta


def rate_key(config: Mapping[str, Any]) -> tuple:
    """What a frame rate depends on most: observation type, network width, batch, device, threads."""
    device = "cuda" if str(config.get("device", "cpu")).startswith("cuda") else "cpu"
    return (
        config.get("obs_type"),
        config.get("hidden_dim"),
        config.get("batch_size"),
        device,
        config.get("torch_threads"),
    )


def pack_size_of(out_dir: Path, status: TrialStatus | None = None) -> int:
    """Members of the pack a finished trial ran in: trial.json's ``pack_size`` (status.json's if the worker
    records one); 1 for trials run before packing existed."""
    if status is not None and status.pack_size is not None and status.pack_size >= 1:
        return status.pack_size
    try:
        size = int((read_trial_meta(Path(out_dir)) or {}).get("pack_size") or 0)
    except (TypeError, ValueError):
        return 1
    return size if size >= 1 else 1


def measured_rates(
    results_root: Path, configs: Iterable[Mapping[str, Any]], known: Mapping[Path, TrialStatus | None] | None = None
) -> dict[tuple, tuple[float, int]]:
    """Median frames/s per member of finished trials in the whole store, for the rate keys the configs need.

    Returns {(rate_key, pack_size): (frames_per_s, n_trials)}: a trial that trained in a pack of K
    measured the rate of one member at pack size K (its frames over its wall time).  Only finished
    trials of at least 2000 frames count: start-up dominates shorter ones.  ``known``: the statuses the
    caller already read, by trial directory (under ``results_root``); they are not read again.
    """
    wanted = {rate_key(c) for c in configs}
    found: dict[tuple, list[float]] = {}
    root = Path(results_root)
    if not root.is_dir():
        return {}
    known = known or {}
    for status_path in root.glob(f"*/*/{STATUS_FILE}"):
        try:
            status = known[status_path.parent] if status_path.parent in known else read_status(status_path.parent)
            if status is None or status.state not in FINISHED_STATUSES:
                continue
            frames, wall = float(status.frame or 0), float(status.wall_time_s or 0)
            if frames < 2000 or wall <= 0:
                continue
            config = read_config(status_path.parent)
        except (OSError, ValueError):
            continue  # a trial whose config cannot be read measures nothing (analysis names it)
        key = rate_key(config)
        if key in wanted:
            found.setdefault((key, pack_size_of(status_path.parent, status)), []).append(frames / wall)
    return {key: (statistics.median(rates), len(rates)) for key, rates in found.items()}


# Reference rates (frames/s per trial, updates and evaluation included) used when the
# store has no finished trial of the same kind.  Hidden 256 on CPU was measured on the
# 2-core development machine (40k frames of the local critic_i_mode profile: 221 s of CPU
# time); 32 from the smoke trials; 1024 is derived (updates 8-10x slower than at 256);
# the GPU number is DrQ-v2's published speed on one V100-class GPU (method.md §1).
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
