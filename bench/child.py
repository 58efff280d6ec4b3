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
from agent.drqv2 import DrQV2Agent, UpdateResult
from agent.train import Timeline, Trainer
from bench.common import PIXEL_OBS_SHAPE, TASK, TimingSink, loop_fps, random_batch
from bench.reference_update import ReferenceUpdate
from contract.config import build_config


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
        reference = ReferenceUpdate(trainer.config, trainer.spec.obs_shape, trainer.spec.action_dim, device)

        def update(batch: dict[str, np.ndarray], step: int, pinned: bool = False) -> UpdateResult:
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
    member_processes: bool = False,
    eval_every: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """One pack's training loop; frames/s and where a cycle's time goes, over the frames after the seed frames.

    With ``eval_every`` the loop evaluates (10 episodes, as the paper) every that many frames, and the fps
    includes that time: the with-evaluation figure."""
    log_every = max(frames // 4, 2)
    base = {
        "task": TASK,
        "obs_type": obs_type,
        "hidden_dim": hidden,
        "num_seed_frames": seed_frames,
        "num_frames": seed_frames + frames,
        "eval_every_frames": eval_every,
        "checkpoint_every_frames": 0,
        "log_every_frames": log_every,
        "torch_threads": threads,
        "device": device,
        "env_threads": env_threads,
        "frame_codec": frame_codec,
        "precision": precision,
        "member_processes": member_processes,
        **({"batch_size": batch_size} if batch_size else {}),
    }
    configs = [build_config({**base, "seed": first_seed + i}) for i in range(members)]
    keep_freed_memory()  # as run_pack does in every trial process
    sinks = [TimingSink() for _ in configs]
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(configs, [Path(out) / str(i) for i in range(members)], [[sink] for sink in sinks])
        timeline = trainer.timeline = Timeline()
        marks: list[tuple[float, dict[str, float], int, int]] = []  # (time, parts, cycles, steps seen) per log row

        def mark(frame: int, metrics: Any) -> None:
            if "perf/fps" in metrics and frame >= seed_frames:
                marks.append((time.perf_counter(), dict(timeline.parts), timeline.cycles, len(timeline.env_step_s)))

        sinks[0].on_log = mark
        try:
            trainer.run()
            ended = [member.ended_as for member in trainer.ended]
        finally:
            trainer.close()
    if ended:
        raise RuntimeError(f"pack members failed: {[e.error for e in ended if e]}")
    member_fps, update_ms = [], []
    for sink in sinks:
        after = [(f, t) for f, t in sink.points if f >= seed_frames]
        (f0, t0), (f1, t1) = after[0], after[-1]
        member_fps.append((f1 - f0) / (t1 - t0))
        update_ms += [ms for f, ms in sink.update_ms if f0 < f <= f1]
    gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0
    return {
        "member_fps": member_fps,
        "update_ms": float(np.mean(update_ms)),
        "gpu_peak_mib": gpu_mib,
        "timeline": cycle_timeline(timeline, marks, members),
    }


def cycle_timeline(timeline: Timeline, marks: list[tuple[float, dict[str, float], int, int]], k: int) -> dict:
    """Per cycle (one agent step of every member) between the first and the last measured log row: ms of each
    part of the loop, what is left (other: evaluation, logging, resets), the members' sampling and environment
    steps (p50/p99 over members and steps), and how much of the environment steps the update hid."""
    (t0, parts0, c0, s0), (t1, parts1, c1, s1) = marks[0], marks[-1]
    cycles = max(c1 - c0, 1)
    per_cycle = {part: (parts1.get(part, 0.0) - parts0.get(part, 0.0)) * 1000.0 / cycles for part in parts1}
    cycle_ms = (t1 - t0) * 1000.0 / cycles
    steps = np.asarray(timeline.env_step_s[s0:s1]) * 1000.0
    samples = np.asarray(timeline.sample_s[s0:s1]) * 1000.0
    # The workers step in parallel: a cycle's environment time is its slowest member's step.
    slowest = steps[: len(steps) // k * k].reshape(-1, k).max(axis=1) if len(steps) >= k else np.zeros(1)
    waited = per_cycle.get("wait_env_steps", 0.0)
    out: dict[str, float] = {f"{part}_ms": value for part, value in sorted(per_cycle.items())}
    out["other_ms"] = cycle_ms - sum(per_cycle.values())
    out["cycle_ms"] = cycle_ms
    # the cycle's time the named parts leave unexplained (log rows, resets, loop overhead): the ±5% check
    out["unaccounted_pct"] = 100.0 * abs(out["other_ms"]) / cycle_ms
    out["env_step_p50_ms"] = float(np.percentile(steps, 50)) if len(steps) else 0.0
    out["env_step_p99_ms"] = float(np.percentile(steps, 99)) if len(steps) else 0.0
    out["sample_p50_ms"] = float(np.percentile(samples[samples > 0], 50)) if (samples > 0).any() else 0.0
    # 1: the update hid every environment step; 0: the loop waited for all of them after it
    out["overlap_fraction"] = float(np.clip(1.0 - waited / max(float(slowest.mean()), 1e-9), 0.0, 1.0))
    if timeline.gpu_update_ms:
        gpu = timeline.gpu_update_ms[-cycles:]
        out["update_gpu_ms"] = float(np.mean(gpu))
        out["gpu_busy_fraction"] = float(sum(gpu) / ((t1 - t0) * 1000.0))
    return out


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
    pack.add_argument("--member-processes", action="store_true")
    pack.add_argument("--eval-every", type=int, default=0)
    pack.add_argument("--batch-size", type=int, default=None)
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
                    args.member_processes,
                    args.eval_every,
                    args.batch_size,
                )
            )
        )
    else:
        print(json.dumps(reference_loop(args.seed_frames, args.frames, args.log_every, args.threads, device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
