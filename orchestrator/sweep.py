"""Run a grid: ``python -m orchestrator.sweep --grid NAME_OR_PATH --profile local|paper [--dry-run]``.

1. Load and validate the grid (nothing starts on a bad grid: exit 2).
2. Look every trial up in the result store; finished ones (completed/diverged) are skipped.
3. ``--dry-run``: print the trial table, counts, frames and a wall-time estimate; stop.
4. Otherwise run the rest with Ray Tune (a local Ray instance, or the cluster at
   ``RAY_ADDRESS``), always as a new Ray experiment: every unfinished trial resumes from its own verified
   checkpoint in the store. Ray's experiment state (``_ray/``) is never restored: restoring it unpickles
   ``tuner.pkl``, and anyone who can write into the store could plant one (issue #19).
5. Print the summary from the store, draw the grid's figures.

Exit codes: 0 all trials finished (completed or diverged), 1 a trial failed or is
unfinished (interrupted), 2 nothing launched (bad grid, resources the cluster lacks,
or another sweep of the same grid running).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.interrupts import terminate_as_interrupt
from contract import config as agent_config
from contract import store
from contract.store import INTERRUPTED, RUNNING, atomic_write_text
from orchestrator import faults, rates
from orchestrator.grid import Grid, GridError, TrialSpec, load_grid
from orchestrator.packing import (
    PROCESS_OVERHEAD_BYTES,
    Pack,
    fmt_bytes,
    free_disk_bytes,
    local_memory_bytes,
    make_packs,
    max_members,
    member_bytes,
    packed_speedup,
    replay_bytes,
    replay_bytes_per_transition,
    replay_transitions,
    store_disk_plan,
)
from orchestrator.report import fmt_duration, summary_lines
from orchestrator.wandb_sink import WANDB_INIT_TIMEOUT_S, resolve_settings

DEFAULT_GRID = "critic_i_mode"
TRIAL_OVERHEAD_S = 15.0  # measured: actor start, imports, env construction, W&B start per trial
EXIT_OK, EXIT_FAILED, EXIT_NOT_LAUNCHED, EXIT_INTERRUPTED = 0, 1, 2, 130


class NotLaunched(Exception):
    """Nothing was started (resources, lock); the message says why."""


# ---------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None, prog: str = "python -m orchestrator.sweep") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", default=DEFAULT_GRID, help="a grid name from sweeps/ or a path to a YAML file")
    parser.add_argument("--profile", default="local", help="profile of the grid: local (CPU, minutes) or paper")
    parser.add_argument("--results", default="results", help="result store root (results/<grid>/<trial_id>/)")
    parser.add_argument("--figures", default="figures", help="where the grid's figures are drawn")
    parser.add_argument("--dry-run", action="store_true", help="print the trial table and estimate; launch nothing")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at a time")
    parser.add_argument("--max-failures", type=int, default=None, help="retries of a crashed trial (grid default)")
    parser.add_argument(
        "--no-wandb",
        action="store_true",
        help="no W&B runs (the store is written as always). Online, a trial waits at most "
        f"{WANDB_INIT_TIMEOUT_S:g} s for the W&B server, then logs offline (same run id); "
        "the summary prints the `wandb sync` command",
    )
    parser.add_argument("--no-figures", action="store_true", help="do not draw figures at the end")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="Ray cluster address host:port (default: $RAY_ADDRESS; unset: a local Ray instance)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="without Ray: run the plan's packs one after another in this process, writing the same store "
        "(the single-machine fallback for a box that has no Ray, e.g. a lent GPU machine; no W&B runs)",
    )
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress tables")
    parser.add_argument(
        "--pack",
        type=int,
        default=None,
        metavar="K",
        help="train up to K trials together in one process (one Ray trial); overrides the grid's "
        "`pack` (default 1); never changes trial ids",
    )
    parser.add_argument(
        "--host-memory",
        default=None,
        metavar="SIZE",
        help="dry run only: check that a pack fits a host with this much memory (e.g. 128GiB) instead of this machine",
    )
    args = parser.parse_args(argv)
    if args.in_process and args.address:
        parser.error("--in-process runs on this machine without Ray; it takes no --address (or unset RAY_ADDRESS)")
    if args.pack is not None and args.pack < 1:
        parser.error(f"--pack {args.pack}: expected a positive integer (allowed: 1, 2, 3, ...; 1 = no packing)")
    if args.host_memory is not None:
        from orchestrator.packing import parse_size

        try:
            args.host_memory = parse_size(args.host_memory)
        except ValueError as err:
            parser.error(f"--host-memory {err}")
        if not args.dry_run:
            parser.error(
                "--host-memory plans a dry run for another host; a real sweep checks the memory of the "
                "machines it runs on (add --dry-run)"
            )
    if args.max_concurrent is not None and args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    if args.max_failures is not None and args.max_failures < 0:
        parser.error("--max-failures must be >= 0")
    return args


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m orchestrator.sweep") -> int:
    """``prog``: the program name in usage and error lines (``bnsweep sweep`` when run through the bnsweep command)."""
    args = parse_args(argv, prog)
    try:
        grid = load_grid(args.grid, args.profile)
    except GridError as err:
        print(f"error: invalid grid {args.grid!r} (profile {args.profile}); nothing was launched:", file=sys.stderr)
        for message in err.messages:
            print(f"  {message}", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    if args.max_concurrent is not None:
        grid.max_concurrent = args.max_concurrent
    if args.max_failures is not None:
        grid.max_failures = args.max_failures
    if args.pack is not None:
        grid.pack, grid.pack_source = args.pack, "--pack"
    results = Path(args.results).expanduser().resolve()
    figures = Path(args.figures).expanduser().resolve()
    if args.dry_run:
        try:
            print_plan(grid, results, args.address, args.host_memory)
        except NotLaunched as err:
            print(f"error: {err}; nothing was launched", file=sys.stderr)
            return EXIT_NOT_LAUNCHED
        print("dry run: nothing launched")
        return EXIT_OK
    try:
        with terminate_as_interrupt():  # SIGTERM (a scheduler, `timeout`) stops the sweep as Ctrl-C does
            return run_sweep(grid, results, None if args.no_figures else figures, args)
    except NotLaunched as err:
        print(f"error: {err}; nothing was launched", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    except KeyboardInterrupt:  # a second Ctrl-C skips Ray's graceful stop; the store is still consistent
        print(
            "\ninterrupted: finished trials are in the store, the others continue from their checkpoints "
            "when you run the same command again",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------- planning
def trial_states(grid: Grid, results: Path) -> dict[str, str]:
    return {t.trial_id: store.trial_state(store.trial_dir(results, grid.name, t.trial_id)) for t in grid.trials}


def _done_frame(results: Path, trial: TrialSpec) -> int:
    return store.resume_frame(store.trial_dir(results, trial.grid, trial.trial_id))


def plan_packs(grid: Grid, results: Path, pending: Sequence[TrialSpec]) -> list[Pack]:
    """The pending trials grouped into packs of at most ``grid.pack`` (equal signature and resume frame)."""
    return make_packs(pending, grid.pack, lambda t: _done_frame(results, t))


def concurrency(grid: Grid, pack_memory: int = 0, host_memory: int | None = None) -> tuple[int, str]:
    """How many packs (Ray trials) run at once on this machine (for the estimate), and why."""
    unit = "pack" if grid.pack > 1 else "trial"
    cpus = os.cpu_count() or 1
    slots = max(1, int(cpus // grid.cpus_per_trial))
    why = f"{cpus} CPUs / {grid.cpus_per_trial:g} per {unit}"
    if grid.gpus_per_trial > 0:
        gpus = _local_gpus()
        if gpus:
            slots = min(slots, max(1, int(gpus / grid.gpus_per_trial)))
            why += f", {gpus} GPUs / {grid.gpus_per_trial:g} per {unit}"
        else:
            slots = max(1, int(1 / grid.gpus_per_trial))
            why = f"assuming 1 GPU at {grid.gpus_per_trial:g} per {unit} (this machine has none)"
    if host_memory and pack_memory:
        by_memory = max(1, int(host_memory // pack_memory))
        if by_memory < slots:
            slots = by_memory
            why = f"memory: {fmt_bytes(host_memory)} / {fmt_bytes(pack_memory)} per {unit}"
    if grid.max_concurrent:
        if grid.max_concurrent < slots:
            why = f"max_concurrent {grid.max_concurrent}"
        slots = min(slots, grid.max_concurrent)
    return slots, why


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - an estimate must not fail
        return 0


def estimate(
    grid: Grid, results: Path, packs: Sequence[Pack], host_memory: int | None = None
) -> tuple[float, list[str]]:
    """Wall seconds for ``packs`` (greedy schedule over the slots) and the lines explaining the rates used.

    A member of a pack of k trains at (per-trial rate) x speedup(k) / k: the per-trial rate is the
    store's median for the same kind of trial (or the reference rate), the speed-up a measured one
    (``packing.PACKED_SPEEDUPS``) or 1 with a note saying it is assumed.  Trials the store measured in
    packs of k give the per-member rate at k directly.
    """
    configs = [m.config for p in packs for m in p.members]
    measured = rates.measured_rates(results, configs)
    notes, durations = [], []
    used: dict[tuple, str] = {}
    for pack in packs:
        config, k = pack.members[0].config, pack.size
        key = rates.rate_key(config)
        if (key, k) in measured:
            rate, n = measured[(key, k)]
            what = "per trial" if k == 1 else f"per member of a pack of {k}"
            used[(key, k)] = f"{rate:.0f} frames/s {what}, median of {n} finished trials in {results}"
        else:
            if (key, 1) in measured:
                base, n = measured[(key, 1)]
                source = f"median of {n} finished trials in {results}"
            else:
                base = rates.reference_rate(config)
                source = (
                    f"reference measurement ({config['obs_type']}, hidden {config['hidden_dim']}, "
                    f"{'GPU' if config['device'] != 'cpu' else 'CPU'}; see docs/orchestrator.md)"
                )
            speedup, assumed = packed_speedup(config, k)
            rate = base * speedup / k
            used.setdefault((key, 1), f"{base:.0f} frames/s per trial, {source}")
            if k > 1:
                used[(key, k)] = f"packs of {k}: {rate:.0f} frames/s per member " + (
                    f"({assumed})" if assumed else f"(measured aggregate speed-up x{speedup:g})"
                )
        remaining = max(0, pack.members[0].num_frames - pack.resume_frame)
        durations.append(remaining / rate + TRIAL_OVERHEAD_S)
    memory = max((p.memory_bytes for p in packs), default=0)
    slots, why = concurrency(grid, memory, host_memory)
    finish = [0.0] * slots
    for duration in durations:  # in launch order, each pack takes the first free slot
        i = finish.index(min(finish))
        finish[i] += duration
    for text in used.values():
        notes.append(f"  rate: {text}")
    unit = "pack(s)" if grid.pack > 1 else "trial(s)"
    notes.append(
        f"  {slots} {unit} at a time ({why}); total {unit[:-3]} time {fmt_duration(sum(durations))} "
        f"(divide by the {unit[:-3]}s a cluster runs at once)"
    )
    return (max(finish) if durations else 0.0), notes


def pack_key_text(grid: Grid) -> str:
    """Where the pack size comes from, for messages."""
    if grid.pack_source == "--pack":
        return f"--pack {grid.pack}"
    if grid.pack_source:
        return f"`{grid.pack_source}: {grid.pack}` in {grid.path}"
    return f"`pack` in {grid.path} (not set: {grid.pack})"


def memory_breakdown(pack: Pack) -> str:
    first = pack.members[0].config
    per_member = member_bytes(first)
    replay = replay_bytes(first)
    overhead = per_member - replay
    return (
        f"{pack.size} x ({fmt_bytes(replay)} replay: {replay_transitions(first):,} transitions x "
        f"{replay_bytes_per_transition(first):,} B, + {fmt_bytes(overhead)}) + {fmt_bytes(PROCESS_OVERHEAD_BYTES)} "
        f"process"
    )


def check_memory_fit(grid: Grid, packs: Sequence[Pack], memory: int, machine: str) -> None:
    """Raise NotLaunched when the largest pack cannot fit a host with ``memory`` bytes."""
    if not packs:
        return
    largest = max(packs, key=lambda p: p.memory_bytes)
    need = largest.memory_bytes
    if need <= memory:
        return
    fits = min(max_members(p.members[0].config, memory) for p in packs)
    unit = f"a pack of {largest.size} trials" if largest.size > 1 else "one trial"
    if fits < 1:
        advice = (
            "not even one of these trials fits: lower replay_capacity or num_frames, or use a host with more memory"
        )
    elif grid.pack_source == "--pack":
        advice = f"at most {fits} of these trials fit one process: pass --pack {fits}"
    else:
        key = grid.pack_source or (f"profiles.{grid.profile}.pack" if grid.profiles else "pack")
        advice = (
            f"at most {fits} of these trials fit one process: set `{key}: {fits}` in {grid.path} or pass --pack {fits}"
        )
    raise NotLaunched(
        f"grid {grid.path}, profile {grid.profile}: {pack_key_text(grid)} does not fit: {unit} "
        f"needs an estimated {fmt_bytes(need)} ({need:,} bytes = {memory_breakdown(largest)}) but "
        f"{machine} has {fmt_bytes(memory)} of memory ({memory:,} bytes); {advice}"
    )


def dry_run_memory_target(grid: Grid, address: str | None, host_memory: int | None) -> tuple[int | None, str]:
    """(memory to check the packs against, which machine that is); None: not checked, with why."""
    if host_memory:
        return host_memory, "the host given by --host-memory"
    if address:
        return None, (
            "not checked in a dry run for a cluster (its nodes are checked when the sweep launches); "
            "pass --host-memory SIZE to check a node size now"
        )
    if grid.gpus_per_trial > 0 and not _local_gpus():
        return None, (
            "not checked: this profile needs a GPU and this machine has none, so it runs on another "
            "host; pass --host-memory SIZE (e.g. 128GiB) to check that host"
        )
    return local_memory_bytes(), "this machine"


def print_plan(grid: Grid, results: Path, address: str | None, host_memory: int | None = None) -> None:
    """The dry run.  Raises NotLaunched (exit 2) when a pack cannot fit the host it is planned for."""
    states = trial_states(grid, results)
    done = [t for t in grid.trials if states[t.trial_id] in store.FINISHED_STATUSES]
    pending = [t for t in grid.trials if states[t.trial_id] not in store.FINISHED_STATUSES]
    packs = plan_packs(grid, results, pending)
    memory, machine = dry_run_memory_target(grid, address, host_memory)
    if memory is not None:
        check_memory_fit(grid, packs, memory, machine)  # before printing anything: exit 2 with one message
    pack_of = {m.trial_id: p.number for p in packs for m in p.members}
    print(
        f"grid {grid.name} ({grid.path}), profile {grid.profile}"
        + (f" (profiles: {', '.join(grid.profiles)})" if grid.profiles else " (no profiles: the grid as written)")
    )
    if grid.description:
        print(f"  {grid.description}")
    header = (
        f"{'#':>4}  {'trial_id':12}  {'cell':38} {'task':20} {'seed':>4} {'frames':>11} {'pack':>5}  "
        f"{'resources':14} state"
    )
    print(header)
    print("-" * len(header))
    resources = f"cpu {grid.cpus_per_trial:g}" + (f" gpu {grid.gpus_per_trial:g}" if grid.gpus_per_trial else "")
    for i, t in enumerate(grid.trials, 1):
        state = states[t.trial_id]
        if state in (store.RUNNING, store.FAILED):
            state += f" @ {_done_frame(results, t):,}"
        pack = str(pack_of.get(t.trial_id, "-"))
        print(
            f"{i:>4}  {t.trial_id:12}  {t.cell_name[:38]:38} {t.task[:20]:20} {t.seed:>4} {t.num_frames:>11,} "
            f"{pack:>5}  {resources:14} {state}"
        )
    for line in schedule_lines(grid):
        print(line)
    started = [t for t in pending if states[t.trial_id] != store.NEW]
    print(
        f"cells: {len(grid.cells)}, tasks: {len(grid.tasks)}, seeds: {len(grid.seeds)} -> {len(grid.trials)} trials; "
        f"{len(done)} done, {len(pending)} to run ({len(started)} of them resume from a checkpoint)"
    )
    if grid.pack > 1 and packs:
        sizes = Counter(p.size for p in packs)
        print(
            f"packs: {len(pending)} trials to run in {len(packs)} pack{'s' if len(packs) != 1 else ''} "
            f"of at most {grid.pack} "
            f"({', '.join(f'{n} x {k}' for k, n in sorted(sizes.items(), reverse=True))} members; "
            f"{pack_key_text(grid)}); one Ray trial and one process per pack, {resources} each"
        )
        print(f"  {'pack':>4}  {'pack_id':17} {'size':>4} {'from frame':>11} {'memory':>10}  members")
        for p in packs:
            print(
                f"  {p.number:>4}  {p.pack_id:17} {p.size:>4} {p.resume_frame:>11,} {fmt_bytes(p.memory_bytes):>10}  "
                f"{' '.join(p.trial_ids)}"
            )
    total = sum(t.num_frames for t in grid.trials)
    to_run = sum(max(0, t.num_frames - _done_frame(results, t)) for t in pending)
    print(f"frames: {to_run:,} to run (grid total {total:,})")
    if packs:
        largest = max(packs, key=lambda p: p.memory_bytes)
        unit = f"a pack of {largest.size}" if largest.size > 1 else "a trial"
        verdict = (
            f"fits {machine} ({fmt_bytes(memory)}; at most "
            f"{min(max_members(p.members[0].config, memory) for p in packs)} such trials per process)"
            if memory is not None
            else machine
        )
        print(f"memory: {unit} needs up to {fmt_bytes(largest.memory_bytes)} ({memory_breakdown(largest)}); {verdict}")
        for line in disk_lines(grid, results, packs, address, memory):
            print(line)
    wall, notes = estimate(grid, results, packs, memory)
    print(f"estimated wall time: {fmt_duration(wall)}" + (" (nothing to run)" if not pending else ""))
    for note in notes if pending else []:
        print(note)
    target = f"the Ray cluster at {address}" if address else "a local Ray instance"
    print(f"would run on {target}; results in {store.grid_dir(results, grid.name)}")


def disk_lines(
    grid: Grid, results: Path, packs: Sequence[Pack], address: str | None, host_memory: int | None
) -> list[str]:
    """The dry run's ``disk:`` line (the store's planned peak) and a ``warning:`` when the results
    filesystem has less free space than that."""
    if address:  # a cluster runs as many packs at once as it has room for, unless max_concurrent says otherwise
        at_once = grid.max_concurrent or len(packs)
        why = f"max_concurrent {grid.max_concurrent}" if grid.max_concurrent else "all of them, on a cluster"
    else:
        at_once, why = concurrency(grid, max((p.memory_bytes for p in packs), default=0), host_memory)
    plan = store_disk_plan(packs, at_once, grid.ray_checkpoints)
    free, measured = free_disk_bytes(results)
    unit = "pack(s)" if grid.pack > 1 else "trial(s)"
    lines = [
        f"disk: the store grows by up to {fmt_bytes(plan.total)} ({plan.total:,} bytes) at its peak with "
        f"{plan.running_packs} {unit} at a time ({why}): {plan.breakdown()}; "
        f"{fmt_bytes(free)} free on the results filesystem ({measured})"
    ]
    if plan.total > free:
        lines.append(
            f"warning: the planned store does not fit: {results} needs up to {plan.total:,} bytes "
            f"({fmt_bytes(plan.total)}) but its filesystem has {free:,} bytes free ({fmt_bytes(free)}, "
            f"measured at {measured}); trials would fail when the disk fills: free space, choose another "
            f"--results, or shrink the checkpoints (fewer frames or a smaller replay_capacity, "
            f"checkpoint_replay: false, ray_checkpoints: false on a shared store)"
        )
    return lines


def schedule_lines(grid: Grid) -> list[str]:
    """One line per task: its resolved frames, exploration std schedule and the other keys its task-group
    preset sets (values as the trials resolved them, all distinct values when cells differ)."""
    lines = ["schedule per task (task-group preset as resolved; frames, std schedule, other preset keys):"]
    for task in grid.tasks:
        trials = [t for t in grid.trials if t.task == task]
        if not trials:
            continue
        config = trials[0].config
        presets = str(config.get("task_presets", "drqv2")) if config.get("use_task_presets", True) else "no preset"
        preset_keys = agent_config.task_preset(task, presets) if presets != "no preset" else {}
        keys = ["num_frames", "stddev_schedule"]
        keys += [k for k in preset_keys if k not in keys]
        shown = []
        for key in keys:
            values = sorted({t.config[key] for t in trials}, key=str)
            text = "/".join(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in values)
            shown.append(f"{'frames' if key == 'num_frames' else key} {text}")
        lines.append(f"  {task} ({agent_config.task_group(task)}, {presets}): {', '.join(shown)}")
    return lines


# ---------------------------------------------------------------------- running
@contextmanager
def grid_lock(directory: Path) -> Iterator[None]:
    """One sweep per grid store at a time (two would run the same trials into the same directories)."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = (directory / store.LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise NotLaunched(f"another sweep of this grid is running (lock {directory / store.LOCK_FILE})") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def member_payload(trial: TrialSpec, results: Path, grid: Grid) -> dict:
    """One member of a pack: plain data only (it is stored in Ray's experiment state)."""
    return {
        "trial_id": trial.trial_id,
        "out_dir": str(store.trial_dir(results, grid.name, trial.trial_id)),
        "config": trial.config,
        "meta": trial.meta(),
    }


def pack_payload(pack: Pack, results: Path, grid: Grid, wandb_settings: Mapping[str, Any] | None) -> dict:
    """What one Ray trial (a pack) receives; ``memory_bytes`` is what it asks Ray for besides CPUs and GPUs."""
    return {
        "pack_id": pack.pack_id,
        "members": [member_payload(m, results, grid) for m in pack.members],
        "wandb": dict(wandb_settings) if wandb_settings else None,
        "resources": dict(grid.resources),
        "memory_bytes": pack.memory_bytes,
        "ray_checkpoints": grid.ray_checkpoints,
    }


def write_sweep_record(grid: Grid, results: Path) -> None:
    """results/<grid>/_sweep/<profile>.json: the trials this grid file asks for now (for analysis and audits)."""

    record = {
        "grid": grid.name,
        "profile": grid.profile,
        "source": str(grid.path),
        "updated_at": datetime.now().isoformat(timespec="seconds"),
        "trials": [t.trial_id for t in grid.trials],
        "cells": list(grid.cells),
        "tasks": list(grid.tasks),
        "seeds": list(grid.seeds),
        "pack": grid.pack,
        "grid_text": grid.source_text,
    }
    atomic_write_text(
        store.grid_dir(results, grid.name) / store.SWEEP_DIR / f"{grid.profile}.json",
        json.dumps(record, indent=2) + "\n",
    )


def pending_trials(grid: Grid, results: Path) -> list[TrialSpec]:
    states = trial_states(grid, results)
    return [t for t in grid.trials if states[t.trial_id] not in store.FINISHED_STATUSES]


def run_sweep(grid: Grid, results: Path, figures: Path | None, args: argparse.Namespace) -> int:
    started = time.time()
    wandb_settings = resolve_settings(grid.wandb, enabled=not (args.no_wandb or args.in_process))
    gdir = store.grid_dir(results, grid.name)
    if not args.address:  # a pack this machine cannot hold starts nothing, not even Ray or the grid directory
        check_memory_fit(
            grid, plan_packs(grid, results, pending_trials(grid, results)), local_memory_bytes(), "this machine"
        )
    try:
        return _run_locked(grid, results, figures, args, started, wandb_settings, gdir)
    except Exception as err:
        fault = faults.store_fault(err)
        if fault is None:
            raise
        marked, unwritable = faults.mark_interrupted(
            (store.trial_dir(results, grid.name, t.trial_id) for t in grid.trials), f"the sweep stopped: {fault}"
        )
        marked_note = f"; {marked} trial(s) left running marked interrupted" if marked else ""
        left = f"; could not mark {len(unwritable)} ({unwritable[0]} ...)" if unwritable else ""
        print(
            f"error: the result store refused a write: {fault}{marked_note}{left}; results written before are "
            f"intact: free space (or make {results} writable) and run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _run_locked(
    grid: Grid,
    results: Path,
    figures: Path | None,
    args: argparse.Namespace,
    started: float,
    wandb_settings: Mapping[str, Any] | None,
    gdir: Path,
) -> int:
    with grid_lock(gdir):
        # Under the lock no other driver runs this grid: a "running" status is left from one that was killed.
        faults.mark_interrupted(
            (store.trial_dir(results, grid.name, t.trial_id) for t in grid.trials),
            "its process ended without writing a final status (a killed driver or machine)",
        )
        pending = pending_trials(grid, results)
        skipped = len(grid.trials) - len(pending)
        print(
            f"grid {grid.name}, profile {grid.profile}: {len(grid.trials)} trials, {skipped} already done, "
            f"{len(pending)} to run -> {gdir}"
        )
        launched = 0
        if pending and args.in_process:
            from orchestrator import in_process

            write_sweep_record(grid, results)
            launched = in_process.run_packs(plan_packs(grid, results, pending), results, grid.name)
        elif pending:
            import ray

            started_ray = connect_ray(args.address)
            try:
                # before anything is written: a profile the cluster cannot run starts nothing
                check_resources(grid, plan_packs(grid, results, pending))
                write_sweep_record(grid, results)
                # again after ray.init: Ray's core worker installs its own SIGTERM handler (a stack dump, then death)
                with terminate_as_interrupt():
                    launched = launch(grid, pending, results, wandb_settings, args)
            finally:
                if started_ray:
                    ray.shutdown()  # its trial processes end with it: nothing writes a status after this
                # Still under the lock: whatever ended the sweep (Ctrl-C, SIGTERM, an error), no status may
                # claim a trial is training when nothing runs it.
                faults.mark_interrupted(
                    (store.trial_dir(results, grid.name, t.trial_id) for t in pending),
                    "the sweep stopped (Ctrl-C, SIGTERM or an error) before this trial wrote its final status",
                )
        else:
            write_sweep_record(grid, results)
    figure_note = draw_figures(grid.name, results, figures) if figures is not None else None
    for line in summary_lines(
        grid.name,
        grid.profile,
        grid.trials,
        results,
        figures,
        launched,
        skipped,
        time.time() - started,
        wandb_settings,
        figure_note,
    ):
        print(line)
    final = trial_states(grid, results)
    return EXIT_OK if all(s in store.FINISHED_STATUSES for s in final.values()) else EXIT_FAILED


def connect_ray(address: str | None) -> bool:
    """Connect to the cluster at ``address`` or start a private local instance; True if we started/connected."""
    import ray

    from orchestrator.trainable import worker_env

    if ray.is_initialized():  # e.g. a test session that started Ray once for many sweeps
        return False
    runtime_env = {"env_vars": worker_env()}
    if address:
        print(f"connecting to the Ray cluster at {address}")
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        # address="local": never attach to a cluster some earlier `ray start` left in /tmp/ray.
        # A small object store: trials exchange only metrics, and memory is the trials'.
        # Ray runs workers at nice 15, which on a shared workstation lets any other process
        # starve the trials; a local sweep is the user's foreground work (override: RAY_worker_niceness).
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(
            address="local",
            include_dashboard=False,
            runtime_env=runtime_env,
            object_store_memory=256 * 1024 * 1024,
            log_to_driver=True,
        )
    return True


def check_resources(grid: Grid, packs: Sequence[Pack] = ()) -> None:
    """Some node must have a pack's CPUs and GPU share, and the largest such node its memory (Ray's view)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    need_cpu, need_gpu = grid.cpus_per_trial, grid.gpus_per_trial
    unit = "pack" if grid.pack > 1 else "trial"
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu]
    if not fits:
        have = "; ".join(
            f"{n.get('NodeManagerAddress')}: {n['Resources'].get('CPU', 0):g} CPU, {n['Resources'].get('GPU', 0):g} GPU"
            for n in nodes
        )
        raise NotLaunched(
            f"each {unit} of profile {grid.profile} needs {need_cpu:g} CPU and {need_gpu:g} GPU, "
            f"and no node of this Ray cluster has that ({have or 'no nodes'}); use a profile that "
            f"fits (PROFILE=local on CPU machines) or change `resources` in {grid.path}"
        )
    largest = max(fits, key=lambda n: n["Resources"].get("memory", 0))
    memory = int(largest["Resources"].get("memory", 0))
    if memory:
        check_memory_fit(
            grid,
            packs,
            memory,
            f"the largest node of this Ray cluster that has the CPUs and GPUs "
            f"({largest.get('NodeManagerAddress')}, Ray's memory resource)",
        )


def launch(
    grid: Grid,
    pending: Sequence[TrialSpec],
    results: Path,
    wandb_settings: Mapping[str, Any] | None,
    args: argparse.Namespace,
) -> int:
    """Run ``pending`` on Ray, one Ray trial per pack; returns how many (member) trials Ray started."""
    # Small trials checkpoint often; Ray's "snapshotting may become a bottleneck" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from orchestrator import trainable
    from orchestrator.progress import ProgressView

    faults.quiet_ray_store_errors()
    ray_root = store.grid_dir(results, grid.name) / store.RAY_DIR
    ray_root.mkdir(parents=True, exist_ok=True)
    runnable = tune.with_resources(trainable.run, trainable.pack_resources)
    attempted: set[str] = set()
    todo = list(pending)
    stopper = faults.store_fault_stopper()
    while todo:
        packs = plan_packs(grid, results, todo)
        payloads = {p.pack_id: pack_payload(p, results, grid, wandb_settings) for p in packs}
        view = ProgressView(payloads, every_s=args.progress_every)
        name = f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        (ray_root / f"{name}.launch.json").write_text(
            json.dumps(
                {
                    "experiment": name,
                    "trials": sorted(t.trial_id for t in todo),
                    "packs": {p.pack_id: p.trial_ids for p in packs},
                    "pack": grid.pack,
                    "profile": grid.profile,
                },
                indent=2,
            )
            + "\n"
        )
        unit = (
            f"{len(packs)} pack{'s' if len(packs) != 1 else ''} of at most {grid.pack} trials ({len(todo)} trials)"
            if grid.pack > 1
            else f"{len(todo)} trials"
        )
        print(
            f"starting Ray experiment {ray_root / name}: {unit}, "
            f"{grid.cpus_per_trial:g} CPU / {grid.gpus_per_trial:g} GPU each"
            + (f", at most {grid.max_concurrent} at a time" if grid.max_concurrent else "")
        )
        tuner = tune.Tuner(
            runnable,
            param_space={"pack": tune.grid_search([payloads[p.pack_id] for p in packs])},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=grid.max_concurrent,
                reuse_actors=False,
                trial_name_creator=trainable.trial_name,
                trial_dirname_creator=trainable.trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(ray_root),
                verbose=0,
                callbacks=[view],
                stop=stopper,
                failure_config=tune.FailureConfig(max_failures=grid.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        try:
            result_grid = tuner.fit()
        except Exception as err:  # Ray failing on a full store (e.g. reading back an error file it truncated)
            fault = faults.store_fault(err) or stopper.fault or faults.full_disk(results)
            if fault is None:
                raise
            raise faults.StoreFaultError(fault) from err
        attempted |= set(view.attempted)
        fault = stopper.fault or (
            faults.full_disk(results)
            if not all(store.is_done(store.trial_dir(results, grid.name, t.trial_id)) for t in todo)
            else None
        )
        if fault is not None:
            raise faults.StoreFaultError(fault)
        if interrupted(result_grid, len(packs), todo, attempted, results, grid.name):
            print("interrupted: run the same command again to continue (each trial from its own checkpoint)")
            break
        # Anything else the store says is unfinished (e.g. Ray saw it finish but its directory was removed)
        # runs in a new experiment.
        todo = [
            t
            for t in todo
            if t.trial_id not in attempted and not store.is_done(store.trial_dir(results, grid.name, t.trial_id))
        ]
    return len(attempted)


def interrupted(
    result_grid: Any, n_packs: int | None, todo: Sequence[TrialSpec], attempted: set[str], results: Path, grid_name: str
) -> bool:
    """Did this fit stop early (Ctrl-C, SIGTERM)?  Ray's ResultGrid lists only the trials it created."""
    trials = getattr(getattr(result_grid, "_experiment_analysis", None), "trials", None)
    if trials is not None:
        if (n_packs is not None and len(trials) < n_packs) or any(
            t.status not in ("TERMINATED", "ERROR") for t in trials
        ):
            return True
    # The trainable always records a final status before it returns: "running" or "interrupted" means
    # it was stopped.
    return any(
        store.trial_state(store.trial_dir(results, grid_name, t.trial_id)) in (RUNNING, INTERRUPTED)
        for t in todo
        if t.trial_id in attempted
    )


def draw_figures(grid_name: str, results: Path, figures: Path) -> str:
    """Draw the grid's figures with the analysis package; a failure here never costs results."""
    try:
        from analysis import figures as analysis_figures
    except ImportError as err:
        return f"not drawn (analysis package unavailable: {err})"
    try:
        code: int | str | None = analysis_figures.main(
            ["--results", str(results), "--out", str(figures), "--grid", grid_name]
        )
    except SystemExit as err:
        code = err.code
    except Exception as err:  # noqa: BLE001 - results are already safe on disk
        return f"not drawn ({type(err).__name__}: {err}); results are intact"
    if code not in (0, None):
        return f"drawing exited with {code}; see the messages above; results are intact"
    return f"{figures / grid_name}/ (report: {figures / 'report.md'})"


if __name__ == "__main__":
    sys.exit(main())
