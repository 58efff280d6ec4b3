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
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.interrupts import terminate_as_interrupt
from contract import store
from orchestrator import faults, launch
from orchestrator.dry_run import format_plan
from orchestrator.grid import Grid, GridError, load_grid
from orchestrator.options import SweepOptions
from orchestrator.packing import parse_size
from orchestrator.plan import NotLaunched, Plan, build_plan
from orchestrator.report import summary_lines
from orchestrator.wandb_sink import WANDB_INIT_TIMEOUT_S, resolve_settings

DEFAULT_GRID = "critic_i_mode"
EXIT_OK, EXIT_FAILED, EXIT_NOT_LAUNCHED, EXIT_INTERRUPTED = 0, 1, 2, 130


# ---------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None, prog: str = "python -m orchestrator.sweep") -> SweepOptions:
    """The command line as options; a contradictory one exits 2 with argparse's usage line."""
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
    host_memory = None
    if args.host_memory is not None:
        try:
            host_memory = parse_size(args.host_memory)
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
    return SweepOptions(
        grid=args.grid,
        profile=args.profile,
        results=Path(args.results).expanduser().resolve(),
        figures=None if args.no_figures else Path(args.figures).expanduser().resolve(),
        dry_run=args.dry_run,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures,
        pack=args.pack,
        wandb=not args.no_wandb,
        address=args.address,
        in_process=args.in_process,
        progress_every_s=args.progress_every,
        host_memory=host_memory,
    )


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m orchestrator.sweep") -> int:
    """``prog``: the program name in usage and error lines (``bnsweep sweep`` when run through the bnsweep command)."""
    options = parse_args(argv, prog)
    try:
        grid = load_grid(options.grid, options.profile)
    except GridError as err:
        print(
            f"error: invalid grid {options.grid!r} (profile {options.profile}); nothing was launched:", file=sys.stderr
        )
        for message in err.messages:
            print(f"  {message}", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    apply_overrides(grid, options)
    if options.dry_run:
        return dry_run(grid, options)
    try:
        with terminate_as_interrupt():  # SIGTERM (a scheduler, `timeout`) stops the sweep as Ctrl-C does
            return run_sweep(build_plan(grid, options), options)
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


def apply_overrides(grid: Grid, options: SweepOptions) -> None:
    """The command line's values over the grid's own (never its trials: ids stay)."""
    if options.max_concurrent is not None:
        grid.max_concurrent = options.max_concurrent
    if options.max_failures is not None:
        grid.max_failures = options.max_failures
    if options.pack is not None:
        grid.pack, grid.pack_source = options.pack, "--pack"


def dry_run(grid: Grid, options: SweepOptions) -> int:
    plan = build_plan(grid, options)
    if plan.memory.error is not None:  # before printing anything: exit 2 with one message
        print(f"error: {plan.memory.error}; nothing was launched", file=sys.stderr)
        return EXIT_NOT_LAUNCHED
    print(format_plan(plan))
    print("dry run: nothing launched")
    return EXIT_OK


# ---------------------------------------------------------------------- running and after
def run_sweep(plan: Plan, options: SweepOptions) -> int:
    started = time.time()
    if plan.memory.error is not None:  # a pack this machine cannot hold starts nothing, not even Ray or the grid dir
        raise NotLaunched(plan.memory.error)
    wandb_settings = resolve_settings(plan.grid.wandb, enabled=options.wandb and not options.in_process)
    try:
        launched = launch.run_plan(plan, options, wandb_settings)
    except Exception as err:
        fault = faults.store_fault(err)
        if fault is None:
            raise
        report_store_fault(plan, fault)
        return EXIT_FAILED
    return finish(plan, options, launched, time.time() - started, wandb_settings)


def report_store_fault(plan: Plan, fault: str) -> None:
    """The store refused a write: no trial may be left "running", and the user learns how to resume."""
    grid, results = plan.grid, plan.results
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


def finish(
    plan: Plan, options: SweepOptions, launched: int, wall_s: float, wandb_settings: Mapping[str, Any] | None
) -> int:
    """After the run: the figures, the summary from the store, and the exit code the store's statuses give."""
    grid, results, figures = plan.grid, plan.results, options.figures
    figure_note = draw_figures(grid.name, results, figures) if figures is not None else None
    skipped = len(grid.trials) - len(plan.pending)
    for line in summary_lines(
        grid.name, grid.profile, grid.trials, results, figures, launched, skipped, wall_s, wandb_settings, figure_note
    ):
        print(line)
    finished = all(store.is_done(store.trial_dir(results, grid.name, t.trial_id)) for t in grid.trials)
    return EXIT_OK if finished else EXIT_FAILED


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
