"""Benchmark parts that run in a process of their own: ``python -m bench.child ROLE ...``.

Each update implementation gets its own process so that it runs under its own
process settings: ours as every trial runs (``run_trial`` keeps freed memory in
the process), the reference-style update with the allocator left as released
DrQ-v2 leaves it. Two such processes take turns, so the ratio is measured side
by side and never with both computing at once.

Roles:
- ``update-server --impl ours|reference``: one pixel update (batch 256, defaults,
  MA-BN) per ``update`` line read on stdin, its milliseconds printed on stdout.
- ``reference-loop``: the whole training loop with the reference-style update in
  place of ours; prints ``{"fps": ..., "update_ms": ...}``.
- ``pack-loop --members K``: a real pack of K members (seeds first_seed..) through
  ``run_pack``; prints each member's frames/s after the seed frames, the mean update
  ms and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.allocator import keep_freed_memory
from agent.config import build_config
from agent.drqv2 import DrQV2Agent, UpdateResult
from agent.store import COMPLETED
from agent.train import Trainer, run_pack
from bench.common import PIXEL_OBS_SHAPE, TASK, TimingSink, loop_fps, random_batch
from bench.reference_update import ReferenceUpdate


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timing covers the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update_server(impl: str, device: torch.device) -> None:
    config = build_config({"task": TASK, "obs_type": "pixels", "device": str(device)})
    batch = random_batch(PIXEL_OBS_SHAPE, 1, config.batch_size, pixels=True)
    if impl == "ours":
        keep_freed_memory()
        agent = DrQV2Agent(config, PIXEL_OBS_SHAPE, 1, device)
        packed = {key: value[None] for key, value in batch.items()}

        def update() -> None:
            agent.update(packed, 5000).read()
    else:
        reference = ReferenceUpdate(config, PIXEL_OBS_SHAPE, 1, device)

        def update() -> None:
            reference.update(batch)

    for _ in range(2 if device.type == "cuda" else 1):  # warm-up: first-call allocations, kernel selection
        update()
    synchronize(device)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "update":
            break
        start = time.perf_counter()
        update()
        synchronize(device)
        print(f"{(time.perf_counter() - start) * 1000.0:.3f}", flush=True)


def reference_loop(
    seed_frames: int, measured_frames: int, log_every: int, threads: int, device: torch.device
) -> dict[str, float]:
    """Our training loop with the reference-style update swapped in (acting, replay and env stay ours)."""

    def swap(trainer: Trainer) -> None:
        env = trainer.members[0].env
        reference = ReferenceUpdate(trainer.config, env.obs_shape, env.action_dim, device)

        def update(batch: dict[str, np.ndarray], step: int) -> UpdateResult:
            start = time.perf_counter()
            reference.update({key: value[0] for key, value in batch.items()}, std=trainer.agent.stddev(step))
            synchronize(device)  # as ours, whose metrics are read in the same step
            return UpdateResult({}, time.perf_counter() - start)

        trainer.agent.update = update  # type: ignore[method-assign]  # the benchmark swaps the learner's step

    fps, update_ms = loop_fps(
        "pixels", seed_frames, measured_frames, log_every, prepare=swap, torch_threads=threads, device=str(device)
    )
    return {"fps": fps, "update_ms": update_ms}


def pack_loop(
    members: int,
    obs_type: str,
    hidden: int,
    seed_frames: int,
    frames: int,
    threads: int,
    device: str,
    first_seed: int,
    env_threads: int = 1,
    frame_codec: str = "none",
    precision: str = "fp32",
) -> dict[str, Any]:
    log_every = max(frames // 4, 2)
    base = {
        "task": TASK,
        "obs_type": obs_type,
        "hidden_dim": hidden,
        "num_seed_frames": seed_frames,
        "num_frames": seed_frames + frames,
        "eval_every_frames": 0,
        "checkpoint_every_frames": 0,
        "log_every_frames": log_every,
        "torch_threads": threads,
        "device": device,
        "env_threads": env_threads,
        "frame_codec": frame_codec,
        "precision": precision,
    }
    configs = [build_config({**base, "seed": first_seed + i}) for i in range(members)]
    sinks = [[TimingSink()] for _ in configs]
    with tempfile.TemporaryDirectory() as out:
        statuses = run_pack(configs, [Path(out) / str(i) for i in range(members)], sinks)
    if any(s.state != COMPLETED for s in statuses):
        raise RuntimeError(f"pack failed: {[s.error for s in statuses]}")
    member_fps, update_ms = [], []
    for (sink,) in sinks:
        after = [(f, t) for f, t in sink.points if f >= seed_frames]
        (f0, t0), (f1, t1) = after[0], after[-1]
        member_fps.append((f1 - f0) / (t1 - t0))
        update_ms += [ms for f, ms in sink.update_ms if f0 < f <= f1]
    gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return {"member_fps": member_fps, "update_ms": float(np.mean(update_ms)), "gpu_peak_mib": gpu_mib}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("update-server")
    server.add_argument("--impl", choices=("ours", "reference"), required=True)
    loop = roles.add_parser("reference-loop")
    loop.add_argument("--seed-frames", type=int, required=True)
    loop.add_argument("--frames", type=int, required=True)
    loop.add_argument("--log-every", type=int, required=True)
    pack = roles.add_parser("pack-loop")
    pack.add_argument("--members", type=int, required=True)
    pack.add_argument("--obs-type", default="states")
    pack.add_argument("--hidden", type=int, default=256)
    pack.add_argument("--seed-frames", type=int, required=True)
    pack.add_argument("--frames", type=int, required=True)
    pack.add_argument("--first-seed", type=int, default=1)
    pack.add_argument("--env-threads", type=int, default=1)
    pack.add_argument("--frame-codec", default="none")
    pack.add_argument("--precision", default="fp32")
    for role in (server, loop, pack):
        role.add_argument("--threads", type=int, default=2)
        role.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.role == "update-server":
        update_server(args.impl, device)
    elif args.role == "pack-loop":
        print(
            json.dumps(
                pack_loop(
                    args.members,
                    args.obs_type,
                    args.hidden,
                    args.seed_frames,
                    args.frames,
                    args.threads,
                    args.device,
                    args.first_seed,
                    args.env_threads,
                    args.frame_codec,
                    args.precision,
                )
            )
        )
    else:
        print(json.dumps(reference_loop(args.seed_frames, args.frames, args.log_every, args.threads, device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
