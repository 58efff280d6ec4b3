"""Run a grid: ``python -m orchestrator.sweep --grid NAME_OR_PATH --profile local|paper [--dry-run]``.

1. Load and validate the grid (nothing starts on a bad grid: exit 2).
2. Look every trial up in the result store; finished ones (completed/diverged) are skipped.
3. ``--dry-run``: print the trial table, counts, frames and a wall-time estimate; stop.
4. Otherwise run the rest with Ray Tune (a local Ray instance, or the cluster at
   ``RAY_ADDRESS``), resuming Ray's own experiment when it covers exactly these trials.
5. Print the summary from the store, draw the grid's figures.

Exit codes: 0 all trials finished (completed or diverged), 1 a trial failed or is
unfinished (interrupted), 2 nothing launched (bad grid, resources the cluster lacks,
or another sweep of the same grid running).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator import store
from orchestrator.grid import Grid, GridError, TrialSpec, load_grid
from orchestrator.report import fmt_duration, summary_lines
from orchestrator.wandb_sink import resolve_settings

DEFAULT_GRID = "critic_i_mode"
TRIAL_OVERHEAD_S = 15.0  # measured: actor start, imports, env construction, W&B start per trial
EXIT_OK, EXIT_FAILED, EXIT_NOT_LAUNCHED, EXIT_INTERRUPTED = 0, 1, 2, 130


class NotLaunched(Exception):
    """Nothing was started (resources, lock); the message says why."""


# ---------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default=DEFAULT_GRID, help="a grid name from sweeps/ or a path to a YAML file")
    parser.add_argument("--profile", default="local", help="profile of the grid: local (CPU, minutes) or paper")
    parser.add_argument("--results", default="results", help="result store root (results/<grid>/<trial_id>/)")
    parser.add_argument("--figures", default="figures", help="where the grid's figures are drawn")
    parser.add_argument("--dry-run", action="store_true", help="print the trial table and estimate; launch nothing")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most N trials at a time")
    parser.add_argument("--max-failures", type=int, default=None, help="retries of a crashed trial (grid default)")
    parser.add_argument("--no-wandb", action="store_true", help="no W&B runs (the store is written as always)")
    parser.add_argument("--no-figures", action="store_true", help="do not draw figures at the end")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="Ray cluster address host:port (default: $RAY_ADDRESS; unset: a local Ray instance)")
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress tables")
    args = parser.parse_args(argv)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    if args.max_failures is not None and args.max_failures < 0:
        parser.error("--max-failures must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
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
    results = Path(args.results).expanduser().resolve()
    figures = Path(args.figures).expanduser().resolve()
    if args.dry_run:
        print_plan(grid, results, args.address)
        print("dry run: nothing launched")
        return EXIT_OK
    try:
        return run_sweep(grid, results, None if args.no_figures else figures, args)
    except NotLaunched as err:
        print(f"error: {err}; nothing was launched", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    except KeyboardInterrupt:  # a second Ctrl-C skips Ray's graceful stop; the store is still consistent
        print("\ninterrupted: finished trials are in the store, the others continue from their checkpoints "
              "when you run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------- planning
def trial_states(grid: Grid, results: Path) -> dict[str, str]:
    return {t.trial_id: store.trial_state(store.trial_dir(results, grid.name, t.trial_id)) for t in grid.trials}


def _done_frame(results: Path, trial: TrialSpec) -> int:
    return store.resume_frame(store.trial_dir(results, trial.grid, trial.trial_id))


def concurrency(grid: Grid) -> tuple[int, str]:
    """How many trials run at once on this machine (for the estimate), and why."""
    cpus = os.cpu_count() or 1
    slots = max(1, int(cpus // grid.cpus_per_trial))
    why = f"{cpus} CPUs / {grid.cpus_per_trial:g} per trial"
    if grid.gpus_per_trial > 0:
        gpus = _local_gpus()
        if gpus:
            slots = min(slots, max(1, int(gpus / grid.gpus_per_trial)))
            why += f", {gpus} GPUs / {grid.gpus_per_trial:g} per trial"
        else:
            slots = max(1, int(1 / grid.gpus_per_trial))
            why = f"assuming 1 GPU at {grid.gpus_per_trial:g} per trial (this machine has none)"
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


def estimate(grid: Grid, results: Path, pending: Sequence[TrialSpec]) -> tuple[float, list[str]]:
    """Wall seconds for ``pending`` (greedy schedule over the slots) and the lines explaining the rates used."""
    measured = store.measured_rates(results, [t.config for t in pending])
    notes, durations = [], []
    used: dict[tuple, str] = {}
    for trial in pending:
        key = store._rate_key(trial.config)
        if key in measured:
            rate, n = measured[key]
            used[key] = f"{rate:.0f} frames/s per trial, median of {n} finished trials in {results}"
        else:
            rate = store.reference_rate(trial.config)
            used[key] = (f"{rate:.0f} frames/s per trial, reference measurement "
                         f"({trial.config['obs_type']}, hidden {trial.config['hidden_dim']}, "
                         f"{'GPU' if trial.config['device'] != 'cpu' else 'CPU'}; see docs/orchestrator.md)")
        remaining = max(0, trial.num_frames - _done_frame(results, trial))
        durations.append(remaining / rate + TRIAL_OVERHEAD_S)
    slots, why = concurrency(grid)
    finish = [0.0] * slots
    for duration in durations:  # in launch order, each trial takes the first free slot
        i = finish.index(min(finish))
        finish[i] += duration
    for text in used.values():
        notes.append(f"  rate: {text}")
    notes.append(f"  {slots} trial(s) at a time ({why}); total trial time {fmt_duration(sum(durations))} "
                 f"(divide by the trials a cluster runs at once)")
    return (max(finish) if durations else 0.0), notes


def print_plan(grid: Grid, results: Path, address: str | None) -> None:
    states = trial_states(grid, results)
    print(f"grid {grid.name} ({grid.path}), profile {grid.profile}"
          + (f" (profiles: {', '.join(grid.profiles)})" if grid.profiles else " (no profiles: the grid as written)"))
    if grid.description:
        print(f"  {grid.description}")
    header = f"{'#':>4}  {'trial_id':12}  {'cell':38} {'task':20} {'seed':>4} {'frames':>11}  {'resources':14} state"
    print(header)
    print("-" * len(header))
    for i, t in enumerate(grid.trials, 1):
        resources = f"cpu {grid.cpus_per_trial:g}" + (f" gpu {grid.gpus_per_trial:g}" if grid.gpus_per_trial else "")
        state = states[t.trial_id]
        if state in ("running", "failed"):
            state += f" @ {_done_frame(results, t):,}"
        print(f"{i:>4}  {t.trial_id:12}  {t.cell_name[:38]:38} {t.task[:20]:20} {t.seed:>4} {t.num_frames:>11,}  "
              f"{resources:14} {state}")
    done = [t for t in grid.trials if states[t.trial_id] in store.DONE_STATUSES]
    pending = [t for t in grid.trials if states[t.trial_id] not in store.DONE_STATUSES]
    started = [t for t in pending if states[t.trial_id] != "new"]
    print(f"cells: {len(grid.cells)}, tasks: {len(grid.tasks)}, seeds: {len(grid.seeds)} -> {len(grid.trials)} trials; "
          f"{len(done)} done, {len(pending)} to run ({len(started)} of them resume from a checkpoint)")
    total = sum(t.num_frames for t in grid.trials)
    to_run = sum(max(0, t.num_frames - _done_frame(results, t)) for t in pending)
    print(f"frames: {to_run:,} to run (grid total {total:,})")
    wall, notes = estimate(grid, results, pending)
    print(f"estimated wall time: {fmt_duration(wall)}" + (" (nothing to run)" if not pending else ""))
    for note in notes if pending else []:
        print(note)
    target = f"the Ray cluster at {address}" if address else "a local Ray instance"
    print(f"would run on {target}; results in {store.grid_dir(results, grid.name)}")


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


def trial_payload(trial: TrialSpec, results: Path, grid: Grid, wandb_settings: Mapping[str, Any] | None) -> dict:
    """What one Ray trial receives: plain data only (it is stored in Ray's experiment state)."""
    return {"trial_id": trial.trial_id, "out_dir": str(store.trial_dir(results, grid.name, trial.trial_id)),
            "config": trial.config, "meta": trial.meta(), "wandb": dict(wandb_settings) if wandb_settings else None,
            "resources": dict(grid.resources), "ray_checkpoints": grid.ray_checkpoints}


def write_sweep_record(grid: Grid, results: Path) -> None:
    """results/<grid>/_sweep/<profile>.json: the trials this grid file asks for now (for analysis and audits)."""
    from agent.sinks import atomic_write_text

    record = {"grid": grid.name, "profile": grid.profile, "source": str(grid.path),
              "updated_at": datetime.now().isoformat(timespec="seconds"),
              "trials": [t.trial_id for t in grid.trials], "cells": list(grid.cells),
              "tasks": list(grid.tasks), "seeds": list(grid.seeds), "grid_text": grid.source_text}
    atomic_write_text(store.grid_dir(results, grid.name) / store.SWEEP_DIR / f"{grid.profile}.json",
                      json.dumps(record, indent=2) + "\n")


def run_sweep(grid: Grid, results: Path, figures: Path | None, args: argparse.Namespace) -> int:
    started = time.time()
    wandb_settings = resolve_settings(grid.wandb, enabled=not args.no_wandb)
    gdir = store.grid_dir(results, grid.name)
    with grid_lock(gdir):
        states = trial_states(grid, results)
        pending = [t for t in grid.trials if states[t.trial_id] not in store.DONE_STATUSES]
        skipped = len(grid.trials) - len(pending)
        print(f"grid {grid.name}, profile {grid.profile}: {len(grid.trials)} trials, {skipped} already done, "
              f"{len(pending)} to run -> {gdir}")
        launched = 0
        if pending:
            import ray

            started_ray = connect_ray(args.address)
            try:
                check_resources(grid)  # before anything is written: a profile the cluster cannot run starts nothing
                write_sweep_record(grid, results)
                launched = launch(grid, pending, results, wandb_settings, args)
            finally:
                if started_ray:
                    ray.shutdown()
        else:
            write_sweep_record(grid, results)
    figure_note = draw_figures(grid.name, results, figures) if figures is not None else None
    for line in summary_lines(grid.name, grid.profile, grid.trials, results, figures, launched, skipped,
                              time.time() - started, wandb_settings, figure_note):
        print(line)
    final = trial_states(grid, results)
    return EXIT_OK if all(s in store.DONE_STATUSES for s in final.values()) else EXIT_FAILED


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
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env,
                 object_store_memory=256 * 1024 * 1024, log_to_driver=True)
    return True


def check_resources(grid: Grid) -> None:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    need_cpu, need_gpu = grid.cpus_per_trial, grid.gpus_per_trial
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu]
    if not fits:
        have = "; ".join(f"{n.get('NodeManagerAddress')}: {n['Resources'].get('CPU', 0):g} CPU, "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
        raise NotLaunched(f"each trial of profile {grid.profile} needs {need_cpu:g} CPU and {need_gpu:g} GPU, "
                          f"and no node of this Ray cluster has that ({have or 'no nodes'}); use a profile that "
                          f"fits (PROFILE=local on CPU machines) or change `resources` in {grid.path}")


def _fingerprint(grid: Grid, results: Path, wandb_settings: Mapping[str, Any] | None) -> str:
    """What a restored Ray experiment must share with this invocation besides its trials."""
    blob = json.dumps({"results": str(results), "wandb": wandb_settings, "resources": grid.resources,
                       "max_concurrent": grid.max_concurrent, "max_failures": grid.max_failures}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def find_restorable(ray_root: Path, pending: Sequence[TrialSpec], fingerprint: str) -> Path | None:
    """The newest Ray experiment of this grid that lists every pending trial and has the same settings."""
    from ray import tune

    wanted = {t.trial_id for t in pending}
    for record in sorted(ray_root.glob("*.launch.json"), reverse=True):
        try:
            launch_info = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        path = ray_root / launch_info.get("experiment", "")
        if launch_info.get("fingerprint") == fingerprint and wanted <= set(launch_info.get("trials", [])) \
                and tune.Tuner.can_restore(str(path)):
            return path
    return None


def launch(grid: Grid, pending: Sequence[TrialSpec], results: Path, wandb_settings: Mapping[str, Any] | None,
           args: argparse.Namespace) -> int:
    """Run ``pending`` on Ray; returns how many trials Ray started."""
    # Small trials checkpoint often; Ray's "snapshotting may become a bottleneck" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from ray import tune

    from orchestrator import trainable
    from orchestrator.progress import ProgressView

    ray_root = store.grid_dir(results, grid.name) / store.RAY_DIR
    ray_root.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(grid, results, wandb_settings)
    runnable = tune.with_resources(trainable.run, {"cpu": grid.cpus_per_trial, "gpu": grid.gpus_per_trial})
    attempted: set[str] = set()
    todo = list(pending)
    restore_path = find_restorable(ray_root, todo, fingerprint)
    while todo:
        payloads = {t.trial_id: trial_payload(t, results, grid, wandb_settings) for t in todo}
        view = ProgressView(payloads, every_s=args.progress_every)
        if restore_path is not None:
            print(f"resuming the Ray experiment {restore_path} (unfinished and errored trials continue)")
            tuner = tune.Tuner.restore(str(restore_path), trainable=runnable, resume_unfinished=True,
                                       resume_errored=True)
            _replace_callbacks(tuner, view)
        else:
            name = f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
            (ray_root / f"{name}.launch.json").write_text(json.dumps(
                {"experiment": name, "fingerprint": fingerprint, "trials": sorted(payloads),
                 "profile": grid.profile}, indent=2) + "\n")
            print(f"starting Ray experiment {ray_root / name}: {len(todo)} trials, "
                  f"{grid.cpus_per_trial:g} CPU / {grid.gpus_per_trial:g} GPU each"
                  + (f", at most {grid.max_concurrent} at a time" if grid.max_concurrent else ""))
            tuner = tune.Tuner(
                runnable,
                param_space={"trial": tune.grid_search([payloads[t.trial_id] for t in todo])},
                tune_config=tune.TuneConfig(max_concurrent_trials=grid.max_concurrent, reuse_actors=False,
                                            trial_name_creator=trainable.trial_name,
                                            trial_dirname_creator=trainable.trial_dirname),
                run_config=tune.RunConfig(
                    name=name, storage_path=str(ray_root), verbose=0, callbacks=[view],
                    failure_config=tune.FailureConfig(max_failures=grid.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
            )
        result_grid = tuner.fit()
        attempted |= set(view.attempted)
        if interrupted(result_grid, todo, attempted, results, grid.name):
            print("interrupted: Ray saved its state; run the same command again to continue")
            break
        # A restored experiment runs only what Ray itself still had open; anything else the store
        # says is unfinished (e.g. Ray marked it finished but its directory was removed) runs fresh.
        todo = [t for t in todo if t.trial_id not in attempted
                and not store.is_done(store.trial_dir(results, grid.name, t.trial_id))]
        restore_path = None
    return len(attempted)


def interrupted(result_grid: Any, todo: Sequence[TrialSpec], attempted: set[str], results: Path,
                grid_name: str) -> bool:
    """Did this fit stop early (Ctrl-C, SIGTERM)?  Ray's ResultGrid lists only the trials it created."""
    trials = getattr(getattr(result_grid, "_experiment_analysis", None), "trials", None)
    if trials is not None:
        if len(trials) < len(todo) or any(t.status not in ("TERMINATED", "ERROR") for t in trials):
            return True
    # The trainable always records a final status before it returns: "running" means it was stopped.
    return any(store.trial_state(store.trial_dir(results, grid_name, t.trial_id)) == "running"
               for t in todo if t.trial_id in attempted)


def _replace_callbacks(tuner: Any, view: Any) -> None:
    """A restored Tuner brings the callbacks pickled with the old run; show progress with a fresh view."""
    try:
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [view]
    except AttributeError:  # Ray changed its internals: the restored view still prints, just without our counts
        pass


def draw_figures(grid_name: str, results: Path, figures: Path) -> str:
    """Draw the grid's figures with the analysis package; a failure here never costs results."""
    try:
        from analysis import figures as analysis_figures
    except ImportError as err:
        return f"not drawn (analysis package unavailable: {err})"
    try:
        code = analysis_figures.main(["--results", str(results), "--out", str(figures), "--grid", grid_name])
    except SystemExit as err:
        code = err.code
    except Exception as err:  # noqa: BLE001 - results are already safe on disk
        return f"not drawn ({type(err).__name__}: {err}); results are intact"
    if code not in (0, None):
        return f"drawing exited with {code}; see the messages above; results are intact"
    return f"{figures / grid_name}/ (report: {figures / 'report.md'})"


if __name__ == "__main__":
    sys.exit(main())
