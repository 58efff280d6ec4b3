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
from pathlib import Path
from typing import Any

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


def run_processes(commands: list[list[str]], cwd: Path, env: dict[str, str]) -> tuple[list[str], float]:
    """Run ``commands`` at the same time; their stdout, and the peak of their summed PSS (MiB)."""
    processes = [
        subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in commands
    ]
    peak = 0
    while any(p.poll() is None for p in processes):
        peak = max(peak, sum(pss_kib(p.pid) for p in processes if p.poll() is None))
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


def gpu_section(
    k_values: tuple[int, ...],
    seed_frames: int,
    frames: int,
    threads: int,
    frame_codec: str = "lz4",
    variants: tuple[tuple[int, str, str], ...] = (),
    on_result: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Pixel packs on the GPU as the paper profile runs them (one environment thread per member up to the
    cores, ``frame_codec``): aggregate loop frames/s, mean update ms, peak GPU memory and the pack process's
    PSS. ``variants`` adds (K, frame_codec, precision) runs; ``on_result`` sees the results after every run,
    so a run cut short by a time limit still leaves what it measured."""
    results: dict[str, float] = {}
    env = {**os.environ}
    cores = os.cpu_count() or 1
    runs = [(k, frame_codec, "fp32") for k in k_values] + list(variants)
    for k, codec, precision in runs:
        name = f"gpu_pixels_k{k}" + ("" if (codec, precision) == (frame_codec, "fp32") else f"_{codec}_{precision}")
        start = time.perf_counter()
        command = pack_command(
            k,
            "pixels",
            1024,
            seed_frames,
            frames,
            threads,
            "cuda",
            env_threads=min(k, cores),
            frame_codec=codec,
            precision=precision,
        )
        outputs, pss = run_processes([command], REPO, env)
        report = json.loads(outputs[0].strip().splitlines()[-1])
        results[f"{name}_fps"] = sum(report["member_fps"])
        results[f"{name}_update_ms"] = report["update_ms"]
        results[f"{name}_gpu_mib"] = report["gpu_peak_mib"]
        results[f"{name}_pss_mib"] = pss
        if "gpu_pixels_k1_fps" in results:
            results[f"{name}_speedup_vs_k1"] = results[f"{name}_fps"] / results["gpu_pixels_k1_fps"]
        print(
            f"  pixels K={k} {codec} {precision}: {sum(report['member_fps']):.0f} frames/s, update "
            f"{report['update_ms']:.1f} ms, GPU {report['gpu_peak_mib']:.0f} MiB, PSS {pss:.0f} MiB "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        if on_result is not None:
            on_result(results)
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.packed --out FILE``: the GPU section alone, written to FILE after every run (for a
    GPU machine lent for minutes, where the CPU sections of ``make bench`` would not fit)."""
    import argparse

    from bench.common import machine

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 16, 8, 4, 32])
    parser.add_argument("--seed-frames", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the pack process")
    parser.add_argument("--frame-codec", default="lz4")
    parser.add_argument(
        "--variant",
        nargs=3,
        action="append",
        default=[],
        metavar=("K", "CODEC", "PRECISION"),
        help="one more run, e.g. --variant 16 none fp32",
    )
    args = parser.parse_args(argv)
    info = {"machine": machine(), "seed_frames": args.seed_frames, "frames": args.frames}

    def write(results: dict[str, float]) -> None:
        Path(args.out).write_text(json.dumps({**info, "results": results}, indent=1))

    variants = tuple((int(k), codec, precision) for k, codec, precision in args.variant)
    write(
        gpu_section(
            tuple(args.k), args.seed_frames, args.frames, args.threads, args.frame_codec, variants, on_result=write
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
