"""Run a plan (``orchestrator.plan``): under the grid's lock, its packs as Ray trials of one Ray Tune experiment
(a local Ray instance or the cluster at ``options.address``), or without Ray through ``orchestrator.in_process``.

Always a new Ray experiment: every unfinished trial resumes from its own verified checkpoint in the store.
Ray's experiment state (``_ray/``) is never restored: restoring it unpickles ``tuner.pkl``, and anyone who can
write into the store could plant one (issue #19).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.interrupts import terminate_as_interrupt
from contract import store
from contract.store import INTERRUPTED, RUNNING, atomic_write_text
from orchestrator import faults
from orchestrator.grid import Grid, TrialSpec
from orchestrator.options import SweepOptions
from orchestrator.packing import Pack
from orchestrator.plan import NotLaunched, Plan, memory_fit_error, plan_packs


def run_plan(plan: Plan, options: SweepOptions, wandb_settings: Mapping[str, Any] | None) -> int:
    """Run the plan's pending trials; returns how many (member) trials were started.

    The plan was read just before the lock is taken (a pack that does not fit must not even create the grid
    directory the lock lives in); a sweep of this grid that was running then still holds the lock here."""
    grid, results = plan.grid, plan.results
    gdir = store.grid_dir(results, grid.name)
    with grid_lock(gdir):
        # Under the lock no other driver runs this grid: a "running" status is left from one that was killed.
        faults.mark_interrupted(
            (store.trial_dir(results, grid.name, t.trial_id) for t in plan.running),
            "its process ended without writing a final status (a killed driver or machine)",
        )
        print(
            f"grid {grid.name}, profile {grid.profile}: {len(grid.trials)} trials, "
            f"{len(grid.trials) - len(plan.pending)} already done, {len(plan.pending)} to run -> {gdir}"
        )
        if not plan.pending:
            write_sweep_record(grid, results)
            return 0
        if options.in_process:
            from orchestrator import in_process

            write_sweep_record(grid, results)
            return in_process.run_plan(plan)
        return _run_on_ray(plan, options, wandb_settings)


def _run_on_ray(plan: Plan, options: SweepOptions, wandb_settings: Mapping[str, Any] | None) -> int:
    import ray

    grid, results = plan.grid, plan.results
    started_ray = connect_ray(options.address)
    try:
        # before anything is written: a profile the cluster cannot run starts nothing
        check_resources(grid, plan.packs)
        write_sweep_record(grid, results)
        # again after ray.init: Ray's core worker installs its own SIGTERM handler (a stack dump, then death)
        with terminate_as_interrupt():
            return launch(plan, wandb_settings, options.progress_every_s)
    finally:
        if started_ray:
            ray.shutdown()  # its trial processes end with it: nothing writes a status after this
        # Still under the lock: whatever ended the sweep (Ctrl-C, SIGTERM, an error), no status may
        # claim a trial is training when nothing runs it.
        faults.mark_interrupted(
            (store.trial_dir(results, grid.name, t.trial_id) for t in plan.pending),
            "the sweep stopped (Ctrl-C, SIGTERM or an error) before this trial wrote its final status",
        )


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
        error = memory_fit_error(
            grid,
            packs,
            memory,
            f"the largest node of this Ray cluster that has the CPUs and GPUs "
            f"({largest.get('NodeManagerAddress')}, Ray's memory resource)",
        )
        if error is not None:
            raise NotLaunched(error)


def launch(plan: Plan, wandb_settings: Mapping[str, Any] | None, progress_every_s: float) -> int:
    """Run the plan's pending trials on Ray, one Ray trial per pack; returns how many (member) trials Ray started."""
    # Small trials checkpoint often; Ray's "snapshotting may become a bottleneck" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from orchestrator import trainable
    from orchestrator.progress import ProgressView

    grid, results = plan.grid, plan.results
    faults.quiet_ray_store_errors()
    ray_root = store.grid_dir(results, grid.name) / store.RAY_DIR
    ray_root.mkdir(parents=True, exist_ok=True)
    runnable = tune.with_resources(trainable.run, trainable.pack_resources)
    attempted: set[str] = set()
    todo, packs = list(plan.pending), list(plan.packs)
    stopper = faults.store_fault_stopper()
    while todo:
        payloads = {p.pack_id: pack_payload(p, results, grid, wandb_settings) for p in packs}
        view = ProgressView(payloads, every_s=progress_every_s)
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
        # runs in a new experiment, packed as the store has it now.
        todo = [
            t
            for t in todo
            if t.trial_id not in attempted and not store.is_done(store.trial_dir(results, grid.name, t.trial_id))
        ]
        packs = plan_packs(grid, results, todo)
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
