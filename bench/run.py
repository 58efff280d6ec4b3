"""The benchmark suite: ``make bench`` (a few minutes) or ``make bench ARGS=--quick`` (smoke).

Writes ``bench/latest.json`` and prints a table.  Every figure comes from this
machine in this run; ratios against the reference-style update are measured
side by side in the same run, the reference in a process of its own with the
allocator as released DrQ-v2 has it (``bench/child.py``).  This process keeps
freed memory, as every trial process does (``run_trial``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.allocator import keep_freed_memory
from agent.drqv2 import DrQV2Agent
from agent.replay import ReplayBuffer
from bench import packed, replay_codec
from bench.common import PIXEL_OBS_SHAPE, TASK, loop_fps, machine, random_batch
from bench.goals import verdicts
from contract.config import build_config
from envs import make_env
from envs.dmc import DMCEnv

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def interleaved_update_ms(repeats: int, threads: int, device: str) -> tuple[list[float], list[float]]:
    """Pixel update times of ours and of the reference-style update, each in its own process, taking turns."""

    def launch(impl: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.child",
                "update-server",
                "--impl",
                impl,
                "--threads",
                str(threads),
                "--device",
                device,
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    servers = {"ours": launch("ours"), "reference": launch("reference")}
    times: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for name, server in servers.items():  # both warm up, one after the other
            assert server.stdin is not None and server.stdout is not None  # both are pipes (launch)
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the {name} update server failed to start")
        for _ in range(repeats):  # interleaved, so drift on a shared machine hits both alike
            for name, server in servers.items():
                assert server.stdin is not None and server.stdout is not None
                server.stdin.write("update\n")
                server.stdin.flush()
                line = server.stdout.readline()
                if not line:
                    raise RuntimeError(f"the {name} update server died")
                times[name].append(float(line))
    finally:
        for server in servers.values():
            if server.stdin:
                server.stdin.close()
            server.wait()
    return times["ours"], times["reference"]


def bench_updates(repeats: int, threads: int, device: str) -> dict[str, float]:
    """Pixel update (ours vs reference-style, interleaved), state update and acting; defaults, MA-BN."""
    ours_ms, ref_ms = interleaved_update_ms(repeats, threads, device)
    config = build_config({"task": TASK, "obs_type": "pixels", "device": device})
    pixel_agent = DrQV2Agent(config, PIXEL_OBS_SHAPE, 1, torch.device(device))
    pixel_obs = random_batch(PIXEL_OBS_SHAPE, 1, 1, pixels=True)["obs"]  # one member's observation
    state_config = build_config({"task": TASK, "obs_type": "states", "device": device})
    state_agent = DrQV2Agent(state_config, (5,), 1, torch.device(device))
    state_batch = random_batch((5,), 1, state_config.batch_size, pixels=False, members=1)
    return {
        "pixel_update_ms": statistics.median(ours_ms),
        "reference_pixel_update_ms": statistics.median(ref_ms),
        "pixel_update_speedup_vs_reference": statistics.median(ref_ms) / statistics.median(ours_ms),
        "state_update_ms": median_ms(lambda: state_agent.update(state_batch, 5000).read(), max(5, repeats * 3)),
        "pixel_act_ms": median_ms(lambda: pixel_agent.act(pixel_obs, 5000, eval_mode=False), 20),
        "state_act_ms": median_ms(lambda: state_agent.act(state_batch["obs"][:, 0], 5000, eval_mode=False), 50),
    }


def bench_env(steps: int) -> dict[str, float]:
    env = make_env(TASK, "states", seed=0, action_repeat=2, frame_stack=1)
    env.reset()
    action = np.zeros(env.action_dim, dtype=np.float32)
    env_step = median_ms(lambda: env.step(action), steps, warmup=5)
    assert isinstance(env, DMCEnv)  # a dm_control task: its physics renders
    physics = env._env.physics
    render = median_ms(lambda: physics.render(84, 84, camera_id=0), max(10, steps // 10), warmup=2)
    return {"env_step_ms": env_step, "render_ms": render}


def reference_loop_fps(
    seed_frames: int, measured_frames: int, log_every: int, threads: int, device: str
) -> dict[str, float]:
    """The same loop with the reference-style update, in a process of its own (default allocator)."""
    args = [
        "--seed-frames",
        str(seed_frames),
        "--frames",
        str(measured_frames),
        "--log-every",
        str(log_every),
        "--threads",
        str(threads),
        "--device",
        device,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench.child", "reference-loop", *args], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference-style loop failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"reference_pixel_fps": result["fps"], "reference_pixel_loop_update_ms": result["update_ms"]}


def concurrency(frames: int) -> dict[str, float]:
    """Throughput of 2 concurrent single-thread state trials over 1 (hidden 256, the local sweep setting)."""

    def launch(out: Path) -> subprocess.Popen:
        args = [
            f"task={TASK}",
            "obs_type=states",
            "hidden_dim=256",
            "torch_threads=1",
            "eval_every_frames=0",
            "num_seed_frames=1000",
            f"num_frames={1000 + frames}",
            "log_every_frames=250",
            "checkpoint_every_frames=0",
            f"out={out}",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "agent.train", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def fps(out: Path) -> float:
        import pandas as pd

        rows = pd.read_csv(out / "metrics.csv").dropna(subset=["perf/fps"])
        return float(rows[rows["frame"] > 1000]["perf/fps"].median())

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        single = launch(tmp_path / "single")
        single.wait()
        pair = [launch(tmp_path / "a"), launch(tmp_path / "b")]
        for process in pair:
            process.wait()
        for process in (single, *pair):
            if process.returncode != 0:
                assert process.stderr is not None  # a pipe (launch)
                raise RuntimeError(process.stderr.read().decode())
        one = fps(tmp_path / "single")
        two = fps(tmp_path / "a") + fps(tmp_path / "b")
    return {"single_trial_fps": one, "two_trials_fps_total": two, "concurrency_speedup": two / one}


def replay_sizes() -> dict[str, float]:
    pixels = ReplayBuffer(1000, (3, 84, 84), np.uint8, 3, 1, nstep=3, discount=0.99, seed=0)
    states = ReplayBuffer(1000, (5,), np.float32, 1, 1, nstep=3, discount=0.99, seed=0)
    return {
        "replay_bytes_per_transition_pixels": pixels.bytes_per_transition,
        "replay_bytes_per_transition_states": states.bytes_per_transition,
        "stacked_store_bytes_per_transition_pixels": 9 * 84 * 84 + 4 * 3,
    }


def packed_sections(args: argparse.Namespace, results: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Issue #9: the compressed replay, packs against processes, a pack of one against a baseline, GPU packs."""
    out: dict[str, Any] = {}
    if args.packed:  # the frame codec on five tasks
        print("replay frame store (real frames of five tasks) ...", flush=True)
        tasks = replay_codec.TASKS[:1] if quick else replay_codec.TASKS
        report = replay_codec.measure(
            tasks, ("lz4",), rendered=60 if quick else 600, capacity=400 if quick else 8000, batches=5 if quick else 50
        )
        for task, rows in report["tasks"].items():
            out[f"replay_lz4_bytes_per_transition_{task}"] = rows["lz4"]["bytes_per_transition"]
            out[f"replay_lz4_sample_ms_{task}"] = rows["lz4"]["sample_ms_median"]
            out[f"replay_none_sample_ms_{task}"] = rows["none"]["sample_ms_median"]
            if not rows["lz4"]["identical_to_uncompressed"]:
                raise RuntimeError(f"lz4 replay sampled other batches than the uncompressed one on {task}")
        out["replay_lz4_worst_ratio"] = max(rows["lz4"]["ratio"] for rows in report["tasks"].values())
        worst_ms = max(rows["lz4"]["sample_ms_median"] for rows in report["tasks"].values())
        out["replay_lz4_sample_pct_of_pixel_update"] = 100.0 * worst_ms / results["pixel_update_ms"]
    if args.packed:  # issue #9's long sections (~20 minutes on 2 cores): packs against processes
        print("packed state trials against single-member processes ...", flush=True)
        cores = os.cpu_count() or 1
        if quick:
            out.update(packed.states_section((1, 2), (256,), 400, 200, cores))
        else:
            out.update(packed.states_section((1, 2, 4, 8), (256,), 1000, 2000, cores))
            out.update(packed.states_section((1, 2, 4, 8), (1024,), 1000, 1000, cores))
    if args.baseline:
        print(f"a pack of one against the worker at {args.baseline} ...", flush=True)
        out.update(packed.baseline_section(args.baseline, rounds=1 if quick else 3, threads=args.threads, quick=quick))
    if args.device == "cuda":
        print("pixel packs on the GPU (the prepared plan of python -m bench.packed) ...", flush=True)
        out.update(packed.gpu_section(packed.GPU_PLAN, 1000, 200 if quick else 1000, threads=args.threads))
    return out


def worker_sections(quick: bool) -> dict[str, Any]:
    """Issue #17 on this machine: a pack of 2 in worker processes against the same pack in one process, side by
    side, with the overlapped loop's timeline; the tensor operations of a K = 16 update."""
    out: dict[str, Any] = {}
    print("a pack of 2 in worker processes against one process ...", flush=True)
    if quick:
        out.update(packed.workers_section(2, ("states",), 400, 200, threads=2, rounds=1))
    else:
        out.update(packed.workers_section(2, ("states",), 1000, 1000, threads=2, rounds=2))
        out.update(packed.workers_section(2, ("pixels",), 400, 40, threads=2, rounds=1))
    print("tensor operations per update ...", flush=True)
    out.update(packed.tensor_ops_section(16))
    return out


def main(argv: list[str] | None = None, *, prog: str = "python -m bench.run") -> int:
    """``prog``: the program name in usage and error lines (``bnsweep bench`` through the bnsweep command)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke version: tiny repeats and loops (~1 min)")
    parser.add_argument("--out", default=str(REPO / "bench" / "latest.json"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the single-process parts")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="where the learners run (env, rendering, replay and the concurrency check stay on CPU)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        default=None,
        help="also time a pack of one against the worker at git revision REV (e.g. the commit "
        "before packing), states and pixels, taking turns",
    )
    parser.add_argument(
        "--packed",
        action="store_true",
        help="also the long packed-trials sections (replay codec on five tasks, packs against processes; ~20 min)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available on this machine", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as run_trial does in every trial process
    quick = args.quick
    started = time.perf_counter()
    results: dict[str, Any] = {}
    print("updates (ours and reference-style, taking turns) ...", flush=True)
    results.update(bench_updates(repeats=2 if quick else 7, threads=args.threads, device=args.device))
    print("environment ...", flush=True)
    results.update(bench_env(steps=50 if quick else 500))
    print("state loop ...", flush=True)
    results["state_fps"], results["state_loop_update_ms"] = loop_fps(
        "states",
        1000 if quick else 4000,
        200 if quick else 2000,
        100 if quick else 500,
        torch_threads=args.threads,
        device=args.device,
    )
    # Loop time per agent step over the sum of its parts, each part as it runs in the loop
    # (env step + act + update / update_every; states render nothing).
    parts_per_step = results["env_step_ms"] + results["state_act_ms"] + results["state_loop_update_ms"] / 2
    loop_per_step = 2 * 1000.0 / results["state_fps"]  # action repeat 2: ms per agent step
    results["loop_overhead_pct"] = 100.0 * (loop_per_step - parts_per_step) / parts_per_step
    print("pixel loop ...", flush=True)
    pixel_loop = (400 if quick else 1000, 8 if quick else 80, 4 if quick else 8)
    results["pixel_fps"], results["pixel_loop_update_ms"] = loop_fps(
        "pixels", *pixel_loop, torch_threads=args.threads, device=args.device
    )
    print("pixel loop, reference-style update ...", flush=True)
    results.update(reference_loop_fps(*pixel_loop, threads=args.threads, device=args.device))
    results["pixel_fps_speedup_vs_reference"] = results["pixel_fps"] / results["reference_pixel_fps"]
    results.update(replay_sizes())
    print("concurrency ...", flush=True)
    results.update(concurrency(frames=400 if quick else 4000))
    results.update(worker_sections(quick))
    if args.packed or args.baseline or args.device == "cuda":
        results.update(packed_sections(args, results, quick))
    flags = " ".join((["--quick"] if quick else []) + ([f"--device {args.device}"] if args.device != "cpu" else []))
    report = {
        "quick": quick,
        "device": args.device,
        "machine": machine(),
        "results": results,
        "goals": verdicts(results),
        "seconds": time.perf_counter() - started,
        "command": "make bench" + (f' ARGS="{flags}"' if flags else ""),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwritten to {out}")
    return 0


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"\nmachine: {m['cpu']} (family/model {m['cpu_family_model']}, {m['isa']}), {m['cores']} cores, "
        f"torch {m['torch']}, {m['torch_threads']} threads"
        f"{'  (QUICK: smoke numbers only)' if report['quick'] else ''}"
    )
    print(f"{'metric':40s} {'value':>12s}  goal")
    for name, value in report["results"].items():
        goal = report["goals"].get(name)
        verdict = f"{goal['goal']:>10s} {'met' if goal['met'] else 'NOT met'}" if goal else ""
        shown = f"{value:12.2f}" if isinstance(value, int | float) else f"{value!s:>12}"
        print(f"{name:44s} {shown}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
