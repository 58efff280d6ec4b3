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
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from agent.allocator import keep_freed_memory
from agent.config import build_config
from agent.drqv2 import DrQV2Agent
from bench.common import PIXEL_OBS_SHAPE, TASK, loop_fps, random_batch
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

        def update() -> None:
            agent.update(batch, 5000)
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


def reference_loop(seed_frames: int, measured_frames: int, log_every: int, threads: int,
                   device: torch.device) -> dict[str, float]:
    """Our training loop with the reference-style update swapped in (acting, replay and env stay ours)."""
    def swap(trainer) -> None:
        reference = ReferenceUpdate(trainer.config, trainer.env.obs_shape, trainer.env.action_dim, device)

        def update(batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
            start = time.perf_counter()
            reference.update(batch, std=trainer.agent.stddev(step))
            synchronize(device)  # as ours, whose update ends by reading its metrics
            return {"perf/update_ms": (time.perf_counter() - start) * 1000.0}

        trainer.agent.update = update

    fps, update_ms = loop_fps("pixels", seed_frames, measured_frames, log_every, prepare=swap,
                              torch_threads=threads, device=str(device))
    return {"fps": fps, "update_ms": update_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("update-server")
    server.add_argument("--impl", choices=("ours", "reference"), required=True)
    loop = roles.add_parser("reference-loop")
    loop.add_argument("--seed-frames", type=int, required=True)
    loop.add_argument("--frames", type=int, required=True)
    loop.add_argument("--log-every", type=int, required=True)
    for role in (server, loop):
        role.add_argument("--threads", type=int, default=2)
        role.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.role == "update-server":
        update_server(args.impl, device)
    else:
        print(json.dumps(reference_loop(args.seed_frames, args.frames, args.log_every, args.threads, device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
