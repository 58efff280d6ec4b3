"""The end-of-sweep summary, computed from the result store (not from Ray).

Counting from the store means the summary also covers trials that an earlier
invocation finished, and it needs no Ray import (dry runs stay fast).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from contract import store
from contract.store import FAILED, UNFINISHED_STATUSES, read_status


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def new_fallbacks(status: store.TrialStatus, wall_s: float) -> list[str]:
    """The checkpoint fallbacks (issue #11) a trial recorded during the last ``wall_s`` seconds."""
    since = datetime.now(UTC) - timedelta(seconds=wall_s + 1)
    notes = []
    for fallback in status.checkpoint_fallbacks:
        try:
            at = datetime.fromisoformat(str(fallback.get("at")))
        except ValueError:
            continue
        if at >= since:
            notes.append(str(fallback.get("note")))
    return notes


def store_counts(out_dirs: Iterable[Path]) -> Counter:
    return Counter(store.trial_state(Path(d)) for d in out_dirs)


def summary_lines(
    grid_name: str,
    profile: str,
    trials: Sequence[Any],
    results: Path,
    figures: Path | None,
    launched: int,
    skipped: int,
    wall_s: float,
    wandb_settings: Mapping[str, Any] | None,
    figure_note: str | None,
) -> list[str]:
    """The end-of-sweep report: counts from the store, failures with their errors, where everything is."""

    dirs = [store.trial_dir(results, t.grid, t.trial_id) for t in trials]
    counts = store_counts(dirs)
    unfinished = sum(counts.get(state, 0) for state in UNFINISHED_STATUSES if state != FAILED)
    lines = [
        "",
        f"== sweep {grid_name} (profile {profile}): {len(trials)} trials: "
        f"{counts.get('completed', 0)} completed, {counts.get('diverged', 0)} diverged, "
        f"{counts.get('failed', 0)} failed, {unfinished} unfinished",
        f"   this run: {launched} launched, {skipped} already done and skipped; wall {fmt_duration(wall_s)}",
    ]
    for trial, directory in zip(trials, dirs, strict=True):
        status = read_status(directory)
        if status is None:
            continue
        if status.state == FAILED:
            lines.append(f"   failed: {trial.cell_name} seed {trial.seed}: {status.error} ({directory})")
        for fallback in new_fallbacks(status, wall_s):
            lines.append(f"   checkpoint fallback: {trial.cell_name} seed {trial.seed}: {fallback} ({directory})")
    if unfinished:
        lines.append("   unfinished trials continue from their checkpoints when you run the same command again")
    lines.append(
        f"   results: {store.grid_dir(results, grid_name)}/<trial_id>/ "
        f"(trial.json, config.yaml, metrics.csv, status.json)"
    )
    lines.append(f"   Ray experiment state: {store.grid_dir(results, grid_name) / store.RAY_DIR}")
    if figures is not None:
        lines.append(f"   figures: {figure_note or figures}")
        lines.append(
            f"   redraw the figures: make figures  (or: python -m analysis.figures --results {results} "
            f"--out {figures} --grid {grid_name})"
        )
    if wandb_settings:
        where = wandb_settings.get("dir") or f"{store.grid_dir(results, grid_name)}/*"
        if wandb_settings["mode"] == "offline":
            lines.append(
                f"   W&B (offline, project {wandb_settings['project']}): upload with "
                f"`wandb sync {where}/wandb/offline-run-*`"
            )
        else:
            lines.append(f"   W&B (online): project {wandb_settings['project']}, job_type {grid_name}")
    lines += wandb_fallback_lines(dirs)
    return lines


def wandb_fallback_lines(trial_dirs: Iterable[Path]) -> list[str]:
    """Trials that logged to an offline W&B run after their online start failed (``wandb_offline.json``),
    with the exact command that uploads them; runs that ``wandb sync`` already marked synced are left out."""
    from orchestrator.wandb_sink import offline_fallbacks

    by_trial = [
        [run for run in offline_fallbacks(directory) if not any(Path(run["offline_dir"]).glob("*.wandb.synced"))]
        for directory in trial_dirs
    ]
    runs = [run for trial_runs in by_trial for run in trial_runs]
    if not runs:
        return []
    trials = sum(1 for trial_runs in by_trial if trial_runs)
    waits = sorted({f"{float(run['timeout_s']):g}" for run in runs if run.get("timed_out") and run.get("timeout_s")})
    if waits and all(run.get("timed_out") or run.get("earlier_run_failed") for run in runs):
        why = f"after the server did not answer in {' / '.join(waits)} s"
    else:
        why = "after their online start failed (each trial's wandb_offline.json says why)"
    return [
        f"   W&B: {trials} trial(s) logged offline {why}; upload with:",
        f"     wandb sync {' '.join(str(run['offline_dir']) for run in runs)}",
    ]
