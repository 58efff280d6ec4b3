"""The plan of one sweep, built once from the grid and one read of the result store (no Ray, no W&B).

``build_plan`` reads every trial's status (and, for an unfinished one, its checkpoint manifest) once and derives
the rest from that: the pending trials, their packs, whether the largest pack fits the memory it is planned for,
the store's disk peak and the wall-time estimate.  The dry run prints it (``orchestrator.dry_run``);
``orchestrator.launch`` runs it on Ray and ``orchestrator.in_process`` without Ray.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contract import store
from orchestrator import rates
from orchestrator.grid import Grid, TrialSpec
from orchestrator.options import SweepOptions
from orchestrator.packing import (
    PROCESS_OVERHEAD_BYTES,
    DiskPlan,
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
from orchestrator.report import fmt_duration

TRIAL_OVERHEAD_S = 15.0  # measured: actor start, imports, env construction, W&B start per trial


class NotLaunched(Exception):
    """Nothing was started (a pack that does not fit, resources, lock); the message says why."""


# ---------------------------------------------------------------------- the store, read once
@dataclass(frozen=True)
class TrialState:
    out_dir: Path
    status: store.TrialStatus | None  # its status.json as read (None: missing or unreadable)
    state: store.Status
    done_frame: int  # frames it has: all of them when finished, else where its checkpoint resumes


def read_trial_state(out_dir: Path) -> TrialState:
    """``store.trial_state`` and ``store.resume_frame`` of one trial from a single read of its status.json (and,
    when it is unfinished, of its checkpoint's manifest)."""
    status = store.read_status(out_dir)
    state = store.state_of(status, (out_dir / store.METRICS_FILE).exists())
    if status is not None and state in store.FINISHED_STATUSES:
        return TrialState(out_dir, status, state, status.frame or 0)
    return TrialState(out_dir, status, state, store.checkpoint_frame(out_dir) or 0)


def read_trial_states(results: Path, trials: Iterable[TrialSpec]) -> dict[str, TrialState]:
    return {t.trial_id: read_trial_state(store.trial_dir(results, t.grid, t.trial_id)) for t in trials}


def pack_trials(grid: Grid, pending: Sequence[TrialSpec], states: Mapping[str, TrialState]) -> list[Pack]:
    """``pending`` grouped into packs of at most ``grid.pack`` (equal signature and resume frame)."""
    return make_packs(pending, grid.pack, lambda t: states[t.trial_id].done_frame)


def plan_packs(grid: Grid, results: Path, pending: Sequence[TrialSpec]) -> list[Pack]:
    """The packs of ``pending`` as the store has them now."""
    return pack_trials(grid, pending, read_trial_states(results, pending))


# ---------------------------------------------------------------------- memory
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


def memory_fit_error(grid: Grid, packs: Sequence[Pack], memory: int, machine: str) -> str | None:
    """Why the largest pack cannot fit a host with ``memory`` bytes (nothing may launch); None when it fits."""
    if not packs:
        return None
    largest = max(packs, key=lambda p: p.memory_bytes)
    need = largest.memory_bytes
    if need <= memory:
        return None
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
    return (
        f"grid {grid.path}, profile {grid.profile}: {pack_key_text(grid)} does not fit: {unit} "
        f"needs an estimated {fmt_bytes(need)} ({need:,} bytes = {memory_breakdown(largest)}) but "
        f"{machine} has {fmt_bytes(memory)} of memory ({memory:,} bytes); {advice}"
    )


@dataclass(frozen=True)
class MemoryVerdict:
    memory: int | None  # bytes the packs are planned against; None: not checked now
    machine: str  # which machine has them, or why nothing is checked now
    error: str | None  # why the largest pack does not fit there; None: it fits (or was not checked)


def memory_verdict(grid: Grid, packs: Sequence[Pack], options: SweepOptions) -> MemoryVerdict:
    """A real sweep checks this machine, unless a cluster runs it (``launch`` checks its nodes once connected);
    a dry run checks the host it is planned for."""
    if options.host_memory:
        memory, machine = options.host_memory, "the host given by --host-memory"
    elif options.address:
        return MemoryVerdict(
            None,
            "not checked in a dry run for a cluster (its nodes are checked when the sweep launches); "
            "pass --host-memory SIZE to check a node size now",
            None,
        )
    elif options.dry_run and grid.gpus_per_trial > 0 and not _local_gpus():
        return MemoryVerdict(
            None,
            "not checked: this profile needs a GPU and this machine has none, so it runs on another "
            "host; pass --host-memory SIZE (e.g. 128GiB) to check that host",
            None,
        )
    else:
        memory, machine = local_memory_bytes(), "this machine"
    return MemoryVerdict(memory, machine, memory_fit_error(grid, packs, memory, machine))


# ---------------------------------------------------------------------- concurrency, disk, time
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


@dataclass(frozen=True)
class DiskVerdict:
    plan: DiskPlan  # the store's planned peak
    why: str  # why that many packs run at once
    free: int  # bytes free on the results filesystem
    measured: Path  # the existing directory that was measured

    @property
    def fits(self) -> bool:
        return self.plan.total <= self.free


def disk_verdict(
    grid: Grid, results: Path, packs: Sequence[Pack], address: str | None, memory: int | None
) -> DiskVerdict:
    if address:  # a cluster runs as many packs at once as it has room for, unless max_concurrent says otherwise
        at_once = grid.max_concurrent or len(packs)
        why = f"max_concurrent {grid.max_concurrent}" if grid.max_concurrent else "all of them, on a cluster"
    else:
        at_once, why = concurrency(grid, max((p.memory_bytes for p in packs), default=0), memory)
    free, measured = free_disk_bytes(results)
    return DiskVerdict(store_disk_plan(packs, at_once, grid.ray_checkpoints), why, free, measured)


@dataclass(frozen=True)
class Estimate:
    wall_s: float
    notes: tuple[str, ...]  # the rates used and the slots, one line each


def estimate(
    grid: Grid,
    results: Path,
    packs: Sequence[Pack],
    host_memory: int | None,
    states: Mapping[str, TrialState],
) -> Estimate:
    """Wall seconds for ``packs`` (greedy schedule over the slots) and the lines explaining the rates used.

    A member of a pack of k trains at (per-trial rate) x speedup(k) / k: the per-trial rate is the
    store's median for the same kind of trial (or the reference rate), the speed-up a measured one
    (``packing.PACKED_SPEEDUPS``) or 1 with a note saying it is assumed.  Trials the store measured in
    packs of k give the per-member rate at k directly.  ``states``: this grid's trials as the plan read them
    (their statuses are not read again).
    """
    configs = [m.config for p in packs for m in p.members]
    measured = rates.measured_rates(results, configs, {s.out_dir: s.status for s in states.values()})
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
    return Estimate(max(finish) if durations else 0.0, tuple(notes))


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    grid: Grid
    results: Path
    address: str | None  # the Ray cluster it is planned for; None: this machine
    states: Mapping[str, TrialState]  # every trial of the grid, by trial id, as the store had it
    pending: tuple[TrialSpec, ...]  # the unfinished trials, in grid order
    packs: tuple[Pack, ...]  # the pending trials grouped, in launch order
    memory: MemoryVerdict
    disk: DiskVerdict | None  # None: nothing to run
    estimate: Estimate

    @property
    def running(self) -> list[TrialSpec]:
        """Trials the store says are training; under the grid's lock nothing is: a killed driver left them."""
        return [t for t in self.grid.trials if self.states[t.trial_id].state == store.RUNNING]


def build_plan(grid: Grid, options: SweepOptions) -> Plan:
    """The plan of ``grid`` (overrides applied) from one read of the store at ``options.results``."""
    results = options.results
    states = read_trial_states(results, grid.trials)
    pending = tuple(t for t in grid.trials if states[t.trial_id].state not in store.FINISHED_STATUSES)
    packs = tuple(pack_trials(grid, pending, states))
    memory = memory_verdict(grid, packs, options)
    return Plan(
        grid=grid,
        results=results,
        address=options.address,
        states=states,
        pending=pending,
        packs=packs,
        memory=memory,
        disk=disk_verdict(grid, results, packs, options.address, memory.memory) if packs else None,
        estimate=estimate(grid, results, packs, memory.memory, states),
    )
