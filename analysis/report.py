"""``figures/report.md``: the claims table, every figure, the final IQM and CI per cell and task, and the trials
that went wrong.

The report holds no timestamps, absolute paths or anything else that changes between two runs on the same
store, so it can be diffed and committed next to the figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import stats
from analysis.claims import claims_lines
from analysis.markdown import md as _md
from analysis.markdown import table as _table
from analysis.plots import GridData, caption, figure_names
from analysis.store import Store
from analysis.style import frames_text
from analysis.summary import (
    DIVERGED_TEXT,
    CellSummary,
    Settings,
    aggregate,
    improvement,
    normalized_finals,
    unnormalizable_tasks,
)
from contract.grid_shows import grid_shows
from contract.status import DIVERGED, FAILED, INTERRUPTED, NEW, RUNNING

REPORT_FILE = "report.md"


def _num(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def _frames(s: CellSummary) -> str:
    if s.frames_min is None:
        return "–"
    if s.frames_min == s.frames_max:
        return frames_text(s.frames_min)
    return f"{frames_text(s.frames_min)}–{frames_text(s.frames_max)}"


def _notes(s: CellSummary) -> str:
    notes = []
    if s.estimate is not None and s.estimate.degenerate:
        notes.append("1 seed: no CI")
    for count, word in (
        (s.n_running, RUNNING),
        (s.n_interrupted, INTERRUPTED),
        (s.n_failed, FAILED),
        (s.n_new, "not started"),
    ):
        if count:
            notes.append(f"{count} {word}")
    return "; ".join(notes)


def _cell_rows(grid: GridData) -> list[list[object]]:
    rows = []
    for s in grid.summaries():
        est, q = s.estimate, s.q_bias
        rows.append(
            [
                s.task,
                s.cell,
                f"{s.n_final}/{s.n_trials}",
                s.n_diverged,
                _frames(s),
                _num(est.point) if est else "–",
                f"[{_num(est.low)}, {_num(est.high)}]" if est else "–",
                f"{q.point:.3g}" if q else "–",
                _notes(s),
            ]
        )
    return rows


def _figure_lines(grid: str, files: Sequence[Path], out_dir: Path) -> list[str]:
    lines = []
    stems: dict[str, dict[str, str]] = {}
    for path in files:
        stems.setdefault(path.stem, {})[path.suffix.lstrip(".")] = Path(os.path.relpath(path, out_dir)).as_posix()
    for stem, by_ext in stems.items():
        links = " · ".join(f"[{ext.upper()}]({by_ext[ext]})" for ext in ("png", "pdf") if ext in by_ext)
        lines.append(f"- **{stem}**: {caption(stem)} ({links})")
        if "png" in by_ext:
            lines.append(f"\n  ![{grid} {stem}]({by_ext['png']})\n")
    return lines


def _aggregate_lines(grid: GridData) -> list[str]:
    finals = normalized_finals(grid.store, grid.settings)
    left_out = unnormalizable_tasks(grid.store, grid.settings)
    note = (
        [f"Left out of the aggregate (no positive final return to normalize by yet): {', '.join(left_out)}.", ""]
        if left_out
        else []
    )
    if finals.empty:
        return [*note, "No finished trial yet: no aggregate across tasks."]
    lines = [
        *note,
        "Across tasks (final return / task maximum; "
        + ", ".join(
            f"{t}: {finals.loc[finals['task'] == t, 'task_max'].iloc[0]:g}" for t in sorted(finals["task"].unique())
        )
        + "):",
        "",
    ]
    estimates = aggregate(finals, grid.settings)
    names = list(stats.AGGREGATES)
    diverged = finals[finals["status"] == DIVERGED].groupby("cell").size()
    rows = []
    for cell, by_name in estimates.items():
        n_tasks = by_name["IQM"].n_tasks
        rows.append(
            [
                cell,
                f"{by_name['IQM'].n_runs} runs / {n_tasks} tasks",
                int(diverged.get(cell, 0)),
                *(f"{by_name[n].point:.3f} [{by_name[n].low:.3f}, {by_name[n].high:.3f}]" for n in names),
            ]
        )
    lines += _table(["cell", "runs", "diverged", *(f"{n} [95% CI]" for n in names)], rows)
    poi = improvement(finals, grid.settings)
    lines += [""]
    if poi:
        target = finals.loc[finals["method"] == "MA-BN"].sort_values("cell_rank")["cell"].iloc[0]
        lines += ["Probability of improvement of MA-BN over each baseline (0.5: no difference):", ""]
        lines += _table(
            ["baseline", "P(MA-BN > baseline)", "95% CI", "tasks", "diverged (MA-BN / baseline)"],
            [
                [
                    c,
                    f"{e.point:.3f}",
                    f"[{e.low:.3f}, {e.high:.3f}]",
                    e.n_tasks,
                    f"{int(diverged.get(target, 0))} / {int(diverged.get(c, 0))}",
                ]
                for c, e in poi.items()
            ],
        )
    else:
        lines += ["Probability of improvement: needs finished MA-BN and baseline trials on a shared task."]
    return lines


def _trouble_lines(store: Store, grids: Sequence[str], settings: Settings | None) -> list[str]:
    trials = store.trials[store.trials["grid"].isin(grids)]
    bad = trials[trials["status"].isin((DIVERGED, FAILED))]
    lines = ["## Trials that diverged or failed", ""]
    if bad.empty:
        lines.append("None.")
    else:
        rule = DIVERGED_TEXT[(settings or Settings()).diverged]
        lines.append(
            f"Diverged trials count in the final returns with {rule}; failed (crashed) trials are left "
            "out of all statistics."
        )
        lines.append("")
        lines += _table(
            ["grid", "trial", "task", "cell", "seed", "status", "frame", "error"],
            [
                [r.grid, r.trial_id, r.task, r.cell, r.seed, r.status, _frame_of(r), r.error or ""]
                for r in bad.itertuples()
            ],
        )
    unfinished = trials[trials["status"].isin((RUNNING, INTERRUPTED, NEW))]
    lines += ["", "## Trials still running or not started", ""]
    if unfinished.empty:
        lines.append("None.")
    else:
        lines.append("They appear in the curves up to their last logged frame but have no final return yet.")
        lines.append("")
        lines += _table(
            ["grid", "trial", "task", "cell", "seed", "status", "frame / planned"],
            [
                [
                    r.grid,
                    r.trial_id,
                    r.task,
                    r.cell,
                    r.seed,
                    r.status,
                    f"{_frame_of(r)} / {frames_text(_int_or_none(r.planned_frames))}",
                ]
                for r in unfinished.itertuples()
            ],
        )
    return lines


def _int_or_none(value: Any) -> int | None:
    """A table cell of any dtype as an int, None when missing or not a number."""
    try:
        return None if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return None


def _frame_of(row: Any) -> str:  # a row of DataFrame.itertuples()
    for value in (row.status_frame, row.last_frame):
        number = _int_or_none(value)
        if number is not None:
            return frames_text(number)
    return "–"


def write_report(
    out_dir: Path,
    store: Store,
    grids: Sequence[GridData],
    files: dict[str, list[Path]],
    results_label: str,
    drawn: Iterable[str] | None = None,
) -> Path:
    """Write ``out_dir/report.md`` for ``grids`` and return its path.

    ``files``: each grid's figure files to link. ``drawn``: the grids whose figures this run drew (default: all);
    the others are reported with the figure files an earlier run left, marked as such.
    """
    settings = grids[0].settings if grids else None
    names = [g.name for g in grids]
    drawn = set(names if drawn is None else drawn)
    lines = [
        "# bnsweep: figures and final returns",
        "",
        f"Result store `{results_label}`; grids: " + ", ".join(f"`{n}`" for n in names) + ". "
        "Regenerate with `make figures` or `python -m analysis.figures --results "
        f"{results_label} --out <dir>`; the same store gives the same files.",
        "",
    ]
    if settings is not None:
        pct = f"{settings.confidence:.0%}"
        lines += [
            "## How the numbers are made",
            "",
            f"- **Final return** of a trial: the mean of its evaluation returns in the last "
            f"{settings.final_window:.0%} of its planned frames (at least its last evaluation). A diverged trial "
            f"is never dropped: it scores {DIVERGED_TEXT[settings.diverged]} (`--diverged {settings.diverged}`; "
            "the curves hold that value after its divergence); running, failed and not-started trials have none.",
            f"- **Per task and cell**: interquartile mean (IQM, 25% trimmed each side) of the final returns over "
            f"seeds, with a {pct} percentile bootstrap CI ({settings.reps} resamples, seed {settings.seed}). "
            "A cell with one seed has no CI: its interval collapses to the point (noted as `1 seed: no CI`).",
            "- **Across tasks**: returns divided by the task maximum (dm_control: 1000; Gymnasium tasks: the best "
            "final return of any trial of the grid on that task) and aggregated with a stratified bootstrap (seeds "
            "resampled within each task), as rliable does.",
            "- **Seeds** column: trials with a final return / all trials of the cell on the task; **diverged**: "
            "how many of them diverged. **Frames**: frame of the last evaluation used.",
            "",
        ]
        lines += claims_lines(store, settings)
    for grid in grids:
        lines += [f"## Grid `{grid.name}`", ""]
        if grid.name not in drawn:
            lines += [
                "Figures not redrawn in this run (`--grid` chose other grids); "
                + (
                    "the files below are from an earlier run and may predate the latest trials."
                    if files.get(grid.name)
                    else f"none drawn yet: add `--grid {grid.name}`."
                ),
                "",
            ]
        lines += _figure_lines(grid.name, files.get(grid.name, []), Path(out_dir))
        lines += ["", "Final return per task and cell:", ""]
        lines += _table(
            [
                "task",
                "cell",
                "seeds",
                "diverged",
                "frames",
                "final return IQM",
                f"{grid.settings.confidence:.0%} CI",
                "final Q-bias IQM",
                "notes",
            ],
            _cell_rows(grid),
        )
        shows_aggregate = "aggregate" in figure_names(grid.name, grid_shows(store.root, grid.name))
        if shows_aggregate or len(grid.tasks) > 1:  # the aggregate figure's numbers, and any comparison across tasks
            lines += [""] + _aggregate_lines(grid)
        lines.append("")
    lines += _trouble_lines(store, names, settings)
    if store.warnings:
        lines += ["", "## Store warnings", ""] + [f"- {_md(w)}" for w in store.warnings]
    path = Path(out_dir) / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
