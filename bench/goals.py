"""The bench's goals, from the performance issues: what ``make bench`` judges its numbers by.

Torch-free, so that ``bench.report`` (which reads the JSON files only) judges a file's numbers by the same goals
the bench wrote next to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GOALS = {  # metric: (comparison, threshold) from the performance issue
    # 1.5x the reference DrQ-v2 side by side, on whatever machine runs the bench ...
    "pixel_update_speedup_vs_reference": (">=", 1.5),
    "pixel_fps_speedup_vs_reference": (">=", 1.5),
    # ... and the absolute figures the issue derived from the reference on its 2-core machine.
    "pixel_update_ms": ("<=", 1200.0),
    "pixel_fps": (">=", 3.2),
    "loop_overhead_pct": ("<=", 10.0),
    "replay_bytes_per_transition_pixels": ("<=", 21_200.0),
    "concurrency_speedup": (">=", 1.7),
    # Packed trials (issue #9): the lz4 frame store at <= 40% of 21,196 B on the worst of five tasks, its
    # sampling <= 10% of a pixel update; 8 state members in one process >= 1.25x the frames/s of 8
    # processes with <= 40% of their memory; a pack of one within 5% of the worker before packing.
    "replay_lz4_worst_ratio": ("<=", 0.40),
    "replay_lz4_sample_pct_of_pixel_update": ("<=", 10.0),
    "states_h256_k8_pack_speedup": (">=", 1.25),
    "states_h256_k8_pack_memory_ratio": ("<=", 0.40),
    "k1_states_fps_vs_baseline": (">=", 0.95),
    "k1_pixels_fps_vs_baseline": (">=", 0.95),
}


def verdicts(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal whose metric ``results`` holds: its value, the goal as text and whether it is met."""
    out = {}
    for name, (op, threshold) in GOALS.items():
        value = results.get(name)
        if value is None:
            continue  # a section this run left out (e.g. no --baseline)
        met = value <= threshold if op == "<=" else value >= threshold
        out[name] = {"value": value, "goal": f"{op} {threshold:g}", "met": bool(met)}
    return out
