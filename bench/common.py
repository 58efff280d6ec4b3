"""What the bench process and its child processes (``bench/child.py``) both use: the benchmark task,
synthetic batches and the training-loop measurement."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.train import Trainer
from contract.config import build_config

TASK = "cartpole_swingup"
PIXEL_OBS_SHAPE = (9, 84, 84)


def random_batch(
    obs_shape: tuple[int, ...], action_dim: int, rows: int, pixels: bool, members: int | None = None
) -> dict[str, np.ndarray]:
    """A batch of ``rows``; with ``members`` a pack's batch (members, rows, ...)."""
    rng = np.random.default_rng(0)
    lead = (rows,) if members is None else (members, rows)
    if pixels:
        obs = rng.integers(0, 256, size=(*lead, *obs_shape), dtype=np.uint8)
        next_obs = rng.integers(0, 256, size=(*lead, *obs_shape), dtype=np.uint8)
    else:
        obs = rng.normal(size=(*lead, *obs_shape)).astype(np.float32)
        next_obs = rng.normal(size=(*lead, *obs_shape)).astype(np.float32)
    return {
        "obs": obs,
        "next_obs": next_obs,
        "action": rng.uniform(-1, 1, (*lead, action_dim)).astype(np.float32),
        "reward": rng.uniform(0, 1, (*lead, 1)).astype(np.float32),
        "discount": np.full((*lead, 1), 0.99**3, dtype=np.float32),
    }


class TimingSink:
    """Wall time at every log point, to measure the loop after the seed frames."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []
        self.update_ms: list[tuple[int, float]] = []
        self.on_log: Callable[[int, Any], None] | None = None  # e.g. a snapshot of the loop's timeline

    def log(self, frame: int, metrics: Any) -> None:
        if self.on_log is not None:
            self.on_log(frame, metrics)
        if "perf/fps" in metrics:  # training rows only (evaluation is off here anyway)
            self.points.append((frame, time.perf_counter()))
        if "perf/update_ms" in metrics:
            self.update_ms.append((frame, metrics["perf/update_ms"]))

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: Any) -> None:
        pass


def loop_fps(
    obs_type: str,
    seed_frames: int,
    measured_frames: int,
    log_every: int,
    prepare: Callable[[Trainer], None] | None = None,
    **extra: Any,
) -> tuple[float, float]:
    """Frames per second of the whole training loop after the seed frames (eval off), and its mean update ms.

    The update time is the loop's own (``perf/update_ms``): inside the loop an update runs on freshly
    sampled batches with the environment sharing the caches, slower than the same update repeated alone.
    ``prepare`` may change the trainer before it runs (the reference-style loop swaps the update in).
    """
    sink = TimingSink()
    config = build_config(
        {
            "task": TASK,
            "obs_type": obs_type,
            "num_seed_frames": seed_frames,
            "num_frames": seed_frames + measured_frames,
            "eval_every_frames": 0,
            "checkpoint_every_frames": 0,
            "log_every_frames": log_every,
            **extra,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer([config], [Path(out)], [[sink]])
        try:
            if prepare:
                prepare(trainer)
            trainer.run()
        finally:
            trainer.close()
    after = [(f, t) for f, t in sink.points if f >= seed_frames]
    (f0, t0), (f1, t1) = after[0], after[-1]
    update_ms = [ms for f, ms in sink.update_ms if f0 < f <= f1]
    return (f1 - f0) / (t1 - t0), float(np.mean(update_ms))


def machine() -> dict[str, Any]:
    """What the numbers were measured on. Hypervisors often hide the model name ("AMD EPYC"), so the
    CPU family/model and the widest vector ISA are kept too: they tell two hosts of one label apart."""
    import torch

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    isa = next((name for name in ("avx512f", "avx2", "avx") if name in flags), "")
    return {
        "cpu": info.get("model name") or platform.processor(),
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "isa": isa,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d", time.gmtime()),  # UTC; docs/performance.md quotes it (bench.report)
    }
