"""Replay frame codecs on real dm_control frames: bytes held per transition and sampling time per batch.

    .venv/bin/python -m bench.replay_codec                       # 5 tasks, every codec (≈ 3-4 min)
    .venv/bin/python -m bench.replay_codec --tasks cartpole_swingup --rendered 200 --capacity 2000   # smoke

For each task it renders ``rendered`` agent steps (84×84 pixels, action repeat 2, uniformly random actions:
frames of an untrained agent), then, for each codec, fills a ``ReplayBuffer`` of ``capacity`` transitions with
``1.25 × capacity`` steps by replaying the rendered episodes over and over (each pass a new episode), so the
ring has wrapped and a batch of 256 reads almost only distinct frames, as it does in a 1M replay (a small
replay of only the rendered steps would let a batch share frames and flatter the decoders). It prints and
returns, per task and codec: ``bytes_per_transition`` (``ReplayBuffer.bytes_per_transition``: the memory
actually held), its ratio to the uncompressed store's 21 196 bytes, GB at 1M transitions, the time to
``sample(256)`` (median and min over ``batches`` batches, frame stacks of 3, n-step 3), the mean time of one
``add`` (the encoding cost paid per environment step) and whether the batches are bit-identical to the
uncompressed replay's with the same seed. The allocator is set as ``run_trial`` sets it in every trial
process (``agent.allocator.keep_freed_memory``).

``measure(...)`` returns everything as a dict (machine included) for a benchmark suite to store.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("cartpole_swingup", "walker_walk", "cheetah_run", "hopper_hop", "quadruped_run")
UNCOMPRESSED_BYTES = 84 * 84 * 3 + 28  # today's pixel store per transition (1-dim action)
GOAL_RATIO = 0.40
GOAL_SAMPLE_MS = 45.0


def machine() -> dict[str, Any]:
    import lz4

    from bench.common import machine as common_machine

    return {**common_machine(), "lz4": lz4.__version__}


def render(task: str, steps: int, seed: int = 0) -> list[tuple[np.ndarray, bool, bool]]:
    """``steps`` agent steps of pixels with random actions: (frame, first, last) per step, episodes whole
    except the last one, which the caller treats as ending where it was cut."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from envs import make_env

    env = make_env(task, "pixels", seed, 2, 3)
    rng = np.random.default_rng(seed)
    step = env.reset()
    out = [(step.frame, True, False)]
    while len(out) < steps:
        if step.last:
            step = env.reset()
            out.append((step.frame, True, False))
            continue
        step = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
        out.append((step.frame, False, bool(step.last)))
    env.close()
    return out


def fill(replay: Any, steps: list[tuple[np.ndarray, bool, bool]], count: int) -> float:
    """Add ``count`` steps, cycling over ``steps`` (each pass starts new episodes); mean seconds per add."""
    action = np.zeros(1, dtype=np.float32)
    total = 0.0
    for n in range(count):
        j = n % len(steps)
        frame, first, last = steps[j]
        first = first or j == 0
        last = last or j == len(steps) - 1
        start = time.perf_counter()
        replay.add(frame, None if first else action, 0.0, 1.0, first=first, last=last)
        total += time.perf_counter() - start
    return total / count


def measure(
    tasks: tuple[str, ...] | list[str] = TASKS,
    codecs: tuple[str, ...] | list[str] | None = None,
    rendered: int = 600,
    capacity: int = 8000,
    batches: int = 50,
    batch_size: int = 256,
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    from agent.allocator import keep_freed_memory
    from agent.replay import FRAME_CODECS, ReplayBuffer

    keep_freed_memory()
    codecs = ["none"] + [c for c in (codecs or FRAME_CODECS) if c != "none"]  # none: the reference
    from agent import replay as replay_module

    report: dict[str, Any] = {
        "machine": machine(),
        "settings": {
            "lz4_level": replay_module.LZ4_LEVEL,
            "rendered_steps_per_task": rendered,
            "capacity": capacity,
            "filled": int(1.25 * capacity),
            "batches": batches,
            "batch_size": batch_size,
            "frame_stack": 3,
            "nstep": 3,
            "action_repeat": 2,
            "policy": "uniform random",
            "seed": seed,
        },
        "goals": {"ratio_max": GOAL_RATIO, "sample_ms_max": GOAL_SAMPLE_MS},
        "tasks": {},
    }
    for task in tasks:
        start = time.perf_counter()
        steps = render(task, rendered, seed)
        if verbose:
            print(f"{task}: rendered {len(steps)} steps in {time.perf_counter() - start:.0f} s", flush=True)
        replays, add_s = {}, {}
        for codec in codecs:
            replays[codec] = ReplayBuffer(
                capacity, (3, 84, 84), np.uint8, 3, 1, nstep=3, discount=0.99, seed=seed, frame_codec=codec
            )
            add_s[codec] = fill(replays[codec], steps, int(1.25 * capacity))
            for _ in range(3):
                replays[codec].sample(batch_size)  # warm-up (scratch buffers, heap, caches)
        times: dict[str, list[float]] = {codec: [] for codec in codecs}
        identical = {codec: True for codec in codecs}
        distinct = []
        for _ in range(batches):
            # The same draws for every codec (same seed, same history): one reference batch at a time.
            reference = None
            for codec in codecs:
                replay = replays[codec]
                begin = time.perf_counter()
                batch = replay.sample(batch_size)
                times[codec].append(time.perf_counter() - begin)
                if reference is None:
                    reference = batch
                else:
                    identical[codec] &= all(np.array_equal(reference[key], batch[key]) for key in reference)
            del reference, batch
            g = replays["none"].sample_indices(batch_size)  # one more draw each, to count distinct frames
            for codec in codecs[1:]:
                replays[codec].sample_indices(batch_size)
            replay = replays["none"]
            n_eff = np.minimum(replay.nstep, replay.episode_end[g % replay.capacity] - g)
            distinct.append(
                len(
                    np.unique(
                        np.concatenate([replay._stack_indices(g).ravel(), replay._stack_indices(g + n_eff).ravel()])
                    )
                )
            )
        rows: dict[str, Any] = {}
        for codec in codecs:
            bpt = float(replays[codec].bytes_per_transition)
            rows[codec] = {
                "bytes_per_transition": round(bpt, 1),
                "ratio": round(bpt / UNCOMPRESSED_BYTES, 4),
                "gb_at_1m": round(bpt * 1e6 / 1e9, 2),
                "sample_ms_median": round(1e3 * float(np.median(times[codec])), 2),
                "sample_ms_min": round(1e3 * float(np.min(times[codec])), 2),
                "add_ms_mean": round(1e3 * add_s[codec], 3),
                "distinct_frames_per_batch": round(float(np.mean(distinct)), 1),
                "identical_to_uncompressed": bool(identical[codec]),
            }
            if verbose:
                print(f"  {codec:>5}: " + ", ".join(f"{k}={v}" for k, v in rows[codec].items()), flush=True)
        del replays
        report["tasks"][task] = rows
    return report


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nCPU {m['cpu']} (family/model {m['cpu_family_model']}, {m['isa'] or 'no AVX'}), {m['cores']} cores, "
        f"load {m['load_average_1min']:.2f}; lz4 {m['lz4']}, numpy {m['numpy']}"
    )
    s = report["settings"]
    print(
        f"{s['rendered_steps_per_task']} rendered steps per task, replay of {s['capacity']} filled with "
        f"{s['filled']} steps; sample({s['batch_size']}) over {s['batches']} batches; goals: ratio <= "
        f"{GOAL_RATIO:.0%}, sample <= {GOAL_SAMPLE_MS:g} ms\n"
    )
    header = (
        f"{'task':<17} {'codec':<5} {'bytes/tr':>9} {'ratio':>6} {'GB@1M':>6} {'ms/256':>7} {'min':>6} "
        f"{'add ms':>7} {'frames':>6} {'same':>4}"
    )
    print(header)
    print("-" * len(header))
    for task, rows in report["tasks"].items():
        for codec, r in rows.items():
            print(
                f"{task:<17} {codec:<5} {r['bytes_per_transition']:>9.0f} {r['ratio']:>6.1%} {r['gb_at_1m']:>6.2f} "
                f"{r['sample_ms_median']:>7.1f} {r['sample_ms_min']:>6.1f} {r['add_ms_mean']:>7.2f} "
                f"{r['distinct_frames_per_batch']:>6.0f} {'yes' if r['identical_to_uncompressed'] else 'NO':>4}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--codecs", nargs="+", default=None, help="default: every FRAME_CODECS entry")
    parser.add_argument("--rendered", type=int, default=600, help="rendered agent steps per task")
    parser.add_argument("--capacity", type=int, default=8000, help="replay capacity (filled 1.25x)")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument(
        "--lz4-level", type=int, default=None, help="lz4 high-compression level (0: fast mode); default LZ4_LEVEL"
    )
    args = parser.parse_args(argv)
    if args.lz4_level is not None:
        from agent import replay

        replay.LZ4_LEVEL = args.lz4_level
    report = measure(args.tasks, args.codecs, args.rendered, args.capacity, args.batches, verbose=True)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
