"""Packed trials on this machine (issue #9): one pack process against the same members as single processes.

- ``states_section``: K = 1, 2, 4, 8 state members (hidden 256 and 1024) as one pack
  process against K single-member processes on the same cores, at the same time:
  aggregate and per-member frames/s and peak memory (PSS, summed over processes).
- ``baseline_section``: K = 1 against the worker of another commit (a git worktree),
  states and pixels, the two loops taking turns in processes of their own.
- ``gpu_section`` (``--device cuda``): the pixel update and loop for K = 1, 4, 8, 16, 32
  with peak GPU memory.
Every run is a real training loop (``agent.train.run_pack``) in a process of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.config import build_config

REPO = Path(__file__).resolve().parents[1]


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (shared pages split among their users), in KiB."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_kib(pid: int) -> int:
    """PSS of a process and all its descendants (a pack and its member worker processes)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += pss_kib(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(child) for child in task.read_text().split()]
            except OSError:
                pass
    return total


def run_processes(
    commands: list[list[str]], cwd: Path, env: dict[str, str], timeout_s: float | None = None
) -> tuple[list[str], float]:
    """Run ``commands`` at the same time; their stdout, and the peak of their summed PSS (MiB), workers
    included. ``TimeoutError`` (the processes killed) when they run past ``timeout_s``."""
    processes = [
        subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    peak, started = 0, time.perf_counter()
    while any(p.poll() is None for p in processes):
        peak = max(peak, sum(tree_pss_kib(p.pid) for p in processes if p.poll() is None))
        if timeout_s is not None and time.perf_counter() - started > timeout_s:
            for process in processes:
                process.kill()
                process.communicate()
            raise TimeoutError(f"benchmark processes ran past {timeout_s:.0f} s")
        time.sleep(0.1)
    outputs = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"benchmark process failed ({process.returncode}):\n{err[-3000:]}")
        outputs.append(out)
    return outputs, peak / 1024.0


def pack_command(
    members: int,
    obs_type: str,
    hidden: int,
    seed_frames: int,
    frames: int,
    threads: int,
    device: str,
    first_seed: int = 1,
    env_threads: int = 1,
    frame_codec: str = "none",
    precision: str = "fp32",
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.child",
        "pack-loop",
        "--members",
        str(members),
        "--obs-type",
        obs_type,
        "--hidden",
        str(hidden),
        "--seed-frames",
        str(seed_frames),
        "--frames",
        str(frames),
        "--threads",
        str(threads),
        "--device",
        device,
        "--first-seed",
        str(first_seed),
        "--env-threads",
        str(env_threads),
        "--frame-codec",
        frame_codec,
        "--precision",
        precision,
    ]


def _member_fps(outputs: list[str]) -> list[float]:
    fps: list[float] = []
    for out in outputs:
        fps += json.loads(out.strip().splitlines()[-1])["member_fps"]
    return fps


def states_section(
    k_values: tuple[int, ...], hiddens: tuple[int, ...], seed_frames: int, frames: int, cores: int
) -> dict[str, float]:
    """One pack process (all cores' threads) vs K single-member processes (1 thread each), same cores."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[str, float] = {}
    for hidden in hiddens:
        for k in k_values:
            tag = f"states_h{hidden}_k{k}"
            packed, packed_mib = run_processes(
                [pack_command(k, "states", hidden, seed_frames, frames, cores, "cpu")], REPO, env
            )
            singles, singles_mib = run_processes(
                [pack_command(1, "states", hidden, seed_frames, frames, 1, "cpu", first_seed=1 + i) for i in range(k)],
                REPO,
                env,
            )
            packed_fps, single_fps = _member_fps(packed), _member_fps(singles)
            results[f"{tag}_pack_fps"] = sum(packed_fps)
            results[f"{tag}_pack_member_fps"] = min(packed_fps)
            results[f"{tag}_processes_fps"] = sum(single_fps)
            results[f"{tag}_pack_speedup"] = sum(packed_fps) / sum(single_fps)
            results[f"{tag}_pack_pss_mib"] = packed_mib
            results[f"{tag}_processes_pss_mib"] = singles_mib
            results[f"{tag}_pack_memory_ratio"] = packed_mib / singles_mib
            print(
                f"  {tag}: pack {sum(packed_fps):.0f} fps {packed_mib:.0f} MiB, "
                f"{k} processes {sum(single_fps):.0f} fps {singles_mib:.0f} MiB",
                flush=True,
            )
    return results


LOOP_SNIPPET = (
    "import json, sys; from bench.common import loop_fps; "
    "fps, ms = loop_fps(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
    "torch_threads=int(sys.argv[5])); print(json.dumps({'fps': fps, 'update_ms': ms}))"
)


def baseline_section(rev: str, rounds: int, threads: int, quick: bool) -> dict[str, Any]:
    """K = 1 against the worker at ``rev`` (e.g. the commit before packing), taking turns, states and pixels."""
    tree = Path(tempfile.mkdtemp(prefix="bnsweep-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO, check=True, capture_output=True)
    loops = {
        "states": ("400", "400", "100") if quick else ("4000", "3000", "500"),
        "pixels": ("400", "8", "4") if quick else ("1000", "80", "8"),
    }
    try:
        times: dict[str, dict[str, list[float]]] = {o: {"ours": [], "baseline": []} for o in loops}
        for _ in range(rounds):
            for obs_type, (seed, frames, log_every) in loops.items():
                for name, cwd in (("ours", REPO), ("baseline", tree)):
                    env = {**os.environ, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": str(threads)}
                    done = subprocess.run(
                        [sys.executable, "-c", LOOP_SNIPPET, obs_type, seed, frames, log_every, str(threads)],
                        cwd=cwd,
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                    if done.returncode != 0:
                        raise RuntimeError(f"{name} {obs_type} loop failed:\n{done.stderr[-3000:]}")
                    times[obs_type][name].append(json.loads(done.stdout.strip().splitlines()[-1])["fps"])
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    results: dict[str, Any] = {"baseline_rev": rev}
    for obs_type, by_name in times.items():
        ours, base = sorted(by_name["ours"]), sorted(by_name["baseline"])
        results[f"k1_{obs_type}_fps"] = ours[len(ours) // 2]
        results[f"baseline_{obs_type}_fps"] = base[len(base) // 2]
        results[f"k1_{obs_type}_fps_vs_baseline"] = ours[len(ours) // 2] / base[len(base) // 2]
    return results


def count_update_ops(k: int, obs_type: str, shared_lr: bool, modes: tuple[str, ...] = ("TTETT",)) -> int:
    """Tensor operations (ATen calls) one packed update of ``k`` members issues, counted by a dispatch mode.
    The count is the host-side work per update and does not depend on the sizes, so tiny networks are used.
    ``shared_lr=False`` gives every member its own learning rate: the optimizer then steps each member's slice,
    as it did for every pack before issue #17."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from agent.drqv2 import DrQV2Agent
    from bench.common import random_batch

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.calls += 1
            return func(*args, **(kwargs or {}))

    pixels = obs_type == "pixels"
    shape = (9, 24, 24) if pixels else (5,)
    configs = [
        build_config(
            {
                "obs_type": obs_type,
                "hidden_dim": 16,
                "feature_dim": 8,
                "batch_size": 4,
                "seed": 1 + i,
                "bn_mode": modes[i % len(modes)],
                "lr": 1e-4 if shared_lr else 1e-4 * (1 + i),
            }
        )
        for i in range(k)
    ]
    agent = DrQV2Agent(configs, shape, 1, torch.device("cpu"))
    batch = random_batch(shape, 1, configs[0].replay_rows_per_update, pixels, members=k)
    agent.update(batch, step=10_000).read()  # warm-up: lazily built state
    counter = Count()
    with counter:
        agent.update(batch, step=10_001).read()
    return counter.calls


def tensor_ops_section(k: int = 16) -> dict[str, float]:
    """Tensor operations per packed update at ``k`` members (pixels, the bn_modes grid's mixed modes), with the
    optimizer stepping whole stacked tensors (members share a learning rate) against one slice per member."""
    modes = ("TTTTT", "TTETT", "EEEEE", "TETTT")
    whole = count_update_ops(k, "pixels", shared_lr=True, modes=modes)
    slices = count_update_ops(k, "pixels", shared_lr=False, modes=modes)
    one = count_update_ops(1, "pixels", shared_lr=True)
    print(f"  tensor ops per update: K=1 {one}, K={k} whole-tensor optimizer {whole}, per-member slices {slices}")
    return {
        "tensor_ops_per_update_k1": float(one),
        f"tensor_ops_per_update_k{k}": float(whole),
        f"tensor_ops_per_update_k{k}_per_member_slices": float(slices),
    }


def workers_section(
    k: int, obs_types: tuple[str, ...], seed_frames: int, frames: int, threads: int, rounds: int
) -> dict[str, float]:
    """A pack of ``k`` with its members in worker processes against the same pack in one process, side by side
    (taking turns, each run in a process of its own): aggregate frames/s, their ratio, and the overlapped loop's
    timeline (how much of the environment steps the update hid)."""
    results: dict[str, float] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for obs_type in obs_types:
        fps: dict[str, list[float]] = {"in_process": [], "workers": []}
        timelines: dict[str, dict[str, float]] = {}
        for _ in range(rounds):
            for name in fps:
                command = pack_command(k, obs_type, 256, seed_frames, frames, threads, "cpu")
                if name == "workers":
                    command.append("--member-processes")
                outputs, _ = run_processes([command], REPO, env)
                report = json.loads(outputs[0].strip().splitlines()[-1])
                fps[name].append(sum(report["member_fps"]))
                timelines[name] = report["timeline"]
        tag = f"{obs_type}_k{k}"
        for name, values in fps.items():
            results[f"{tag}_{name}_fps"] = sorted(values)[len(values) // 2]
        results[f"{tag}_workers_vs_in_process"] = results[f"{tag}_workers_fps"] / results[f"{tag}_in_process_fps"]
        for name, timeline in timelines.items():
            for key, value in timeline.items():
                results[f"{tag}_{name}_{key}"] = value
        print(
            f"  {tag}: in process {results[f'{tag}_in_process_fps']:.1f} fps, workers "
            f"{results[f'{tag}_workers_fps']:.1f} fps (x{results[f'{tag}_workers_vs_in_process']:.2f}), overlap "
            f"{timelines['workers']['overlap_fraction']:.2f}",
            flush=True,
        )
    return results


@dataclass(frozen=True)
class PackRun:
    """One run of the GPU plan: a pixel pack of ``k``, its members in worker processes unless told otherwise."""

    k: int
    frame_codec: str = "lz4"
    precision: str = "fp32"
    member_processes: bool = True
    eval_every: int = 0  # frames between evaluations (10 episodes each); 0: training only

    @property
    def name(self) -> str:
        name = f"gpu_pixels_k{self.k}_{self.frame_codec}"
        if self.precision != "fp32":
            name += f"_{self.precision}"
        if not self.member_processes:
            name += "_in_process"
        if self.eval_every:
            name += "_with_eval"
        return name


# The prepared GPU run (issue #17): K = 1, 4, 8, 16, 32 with lz4 and raw replays, evaluation on, precision, and
# the in-process loop for comparison; the most important first, so that a run cut short keeps those.
GPU_PLAN = (
    PackRun(16),
    PackRun(1),
    PackRun(16, "none"),
    PackRun(16, member_processes=False),
    PackRun(16, eval_every=1000),
    PackRun(4),
    PackRun(8),
    PackRun(16, precision="tf32"),
    PackRun(16, precision="bf16"),
    PackRun(32),
    PackRun(1, "none"),
    PackRun(4, "none"),
    PackRun(8, "none"),
)


def gpu_section(
    plan: tuple[PackRun, ...],
    seed_frames: int,
    frames: int,
    threads: int,
    device: str = "cuda",
    hidden: int = 1024,
    batch_size: int | None = None,
    time_limit_s: float | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Pixel packs as the paper profile runs them: aggregate training frames/s, mean update ms, peak GPU
    memory, the PSS of the pack process and its workers, and the per-cycle timeline. ``on_result`` sees the
    results after every run, so a plan cut short still leaves what it measured; a run that would pass
    ``time_limit_s`` (counted from the section's start) is stopped and recorded as stopped."""
    results: dict[str, Any] = {}
    began = time.perf_counter()
    for run in plan:
        name = run.name
        left = None if time_limit_s is None else time_limit_s - (time.perf_counter() - began)
        if left is not None and left < 20:
            results[f"{name}_skipped"] = "time limit"
            continue
        start = time.perf_counter()
        command = pack_command(
            run.k,
            "pixels",
            hidden,
            seed_frames,
            frames,
            threads,
            device,
            env_threads=1 if run.member_processes else min(run.k, os.cpu_count() or 1),
            frame_codec=run.frame_codec,
            precision=run.precision,
        )
        if run.member_processes:
            command.append("--member-processes")
        if run.eval_every:
            command += ["--eval-every", str(run.eval_every)]
        if batch_size:
            command += ["--batch-size", str(batch_size)]
        try:
            outputs, pss = run_processes([command], REPO, {**os.environ}, timeout_s=left)
        except TimeoutError:
            results[f"{name}_stopped_after_s"] = time.perf_counter() - start
            print(f"  {name}: stopped at the time limit", flush=True)
            if on_result is not None:
                on_result(results)
            continue
        report = json.loads(outputs[0].strip().splitlines()[-1])
        results[f"{name}_fps"] = sum(report["member_fps"])
        results[f"{name}_update_ms"] = report["update_ms"]
        results[f"{name}_gpu_mib"] = report["gpu_peak_mib"]
        results[f"{name}_pss_mib"] = pss
        results[f"{name}_timeline"] = report["timeline"]
        print(
            f"  {name}: {sum(report['member_fps']):.0f} frames/s, cycle {report['timeline']['cycle_ms']:.1f} ms, "
            f"update {report['update_ms']:.1f} ms, GPU {report['gpu_peak_mib']:.0f} MiB, PSS {pss:.0f} MiB "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        if on_result is not None:
            on_result(results)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.packed --out FILE``: the prepared GPU run (``GPU_PLAN``), written to FILE after every
    run, within ``--time-limit`` seconds (for a GPU machine lent for minutes). ``--device cpu --quick`` runs the
    same script in miniature, to check it before a GPU session."""
    import argparse

    from bench.common import machine

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed-frames", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=1000, help="measured frames per member after the seed frames")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the pack process")
    parser.add_argument("--time-limit", type=float, default=440.0, help="seconds for the whole plan")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="these runs of GPU_PLAN only")
    parser.add_argument("--quick", action="store_true", help="tiny networks and budgets, K <= 4: a smoke run")
    args = parser.parse_args(argv)
    plan = GPU_PLAN if args.only is None else tuple(run for run in GPU_PLAN if run.name in args.only)
    hidden, batch = (32, 16) if args.quick else (1024, None)
    if args.quick:
        plan = tuple(run for run in plan if run.k <= 4 and run.precision == "fp32")
    info = {"machine": machine(), "seed_frames": args.seed_frames, "frames": args.frames, "hidden": hidden}

    def write(results: dict[str, Any]) -> None:
        Path(args.out).write_text(json.dumps({**info, "results": results}, indent=1) + "\n")

    write(
        gpu_section(
            plan, args.seed_frames, args.frames, args.threads, args.device, hidden, batch, args.time_limit, write
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
