"""From the tidy store to the numbers the figures and the report show.

The rules here are the ones a reader of the figures needs to know (docs/analysis.md repeats them):

- **Final return** of a trial: for a *completed* trial, the mean of its evaluations in the last
  ``final_window`` (default 10%) of its frames, i.e. at frame >= (1 - final_window) * num_frames (at least
  its last evaluation). A *diverged* trial is never dropped, which would flatter the method that diverges;
  what it scores is ``Settings.diverged`` (``DIVERGED_RULES``):
  ``task_min`` (default): the lowest evaluation return of any trial of the store on its task
  (``Store.eval_floors``): its parameters are no longer finite, so it has no policy left to keep, and it is
  charged with the worst policy seen on the task instead of the one it had before collapsing;
  ``last``: its last evaluation before divergence (the optimistic reading, kept to show the difference).
  The rule is about the return only: other metrics (Q-bias, coverage) of a diverged trial are its last values.
  *Running*, *interrupted*, *failed* (crashed) and *new* (not started) trials have no final return; they are
  listed in the report.
- **Area under the return curve** of a trial (``area_scores``, the speed claim): the trapezoid integral of
  its evaluation returns over frames 0 to its planned frames, divided by those frames (its mean return over
  the run); the last evaluation holds to the end, and a diverged trial holds the final-return rule's value
  from its divergence on, as in the curves.
- **Curves**: at each logged frame, the IQM over the seeds that have a value there, with a 95%
  stratified-bootstrap CI. For the return, a diverged seed holds the value the final-return rule gives it
  from its divergence up to its planned frames; its diagnostics (Q-bias, losses) simply stop. Failed trials
  are left out of curves and statistics.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import stats
from analysis.store import FINISHED, Store
from contract.metrics import EVAL_RETURN, FRAME, Q_BIAS_MEAN
from contract.status import COMPLETED, DIVERGED, FAILED, INTERRUPTED, NEW, RUNNING

DEFAULT_FINAL_WINDOW = 0.1
# failed trials crashed for reasons outside the method; interrupted ones are partial, like running ones
CURVE_STATUSES = (COMPLETED, DIVERGED, RUNNING, INTERRUPTED)
# What a diverged trial's return counts as (module docstring); the first is the default.
DIVERGED_RULES = ("task_min", "last")
DEFAULT_DIVERGED = DIVERGED_RULES[0]
DIVERGED_TEXT = {
    "task_min": "the lowest evaluation return of any trial of the store on its task",
    "last": "its last evaluation before divergence",
}


@dataclass(frozen=True)
class Settings:
    reps: int = stats.DEFAULT_REPS
    confidence: float = stats.DEFAULT_CONFIDENCE
    seed: int = stats.DEFAULT_SEED
    final_window: float = DEFAULT_FINAL_WINDOW
    dpi: int = 150  # PNG resolution (PDFs are vector)
    diverged: str = DEFAULT_DIVERGED  # one of DIVERGED_RULES

    def __post_init__(self) -> None:
        check_diverged(self.diverged)


def check_diverged(rule: str) -> None:
    """Raise ValueError unless ``rule`` is one of DIVERGED_RULES."""
    if rule not in DIVERGED_RULES:
        raise ValueError(f"diverged={rule!r}: must be one of {', '.join(DIVERGED_RULES)}")


def _planned_frames(row: pd.Series) -> float:
    value = row.get("planned_frames")
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def diverged_value(store: Store, trial: pd.Series, last: float, rule: str) -> float:
    """The return a diverged ``trial`` counts with under ``rule`` (``last``: its last evaluation return)."""
    if rule == "last":
        return last
    floor = store.eval_floors.get(str(trial["task"]))
    return last if floor is None else float(floor)  # no floor only when the task has no evaluation at all


def final_scores(
    store: Store,
    metric: str = EVAL_RETURN,
    window: float = DEFAULT_FINAL_WINDOW,
    diverged: str = DEFAULT_DIVERGED,
    budget: float = 1.0,
) -> pd.DataFrame:
    """One row per finished trial: its final value of ``metric`` (rules in the module docstring).

    Columns: the trial's columns of ``store.trials`` plus ``value``, ``final_frame`` (last evaluation used:
    for a diverged trial, its last one before divergence) and ``n_points`` (evaluations averaged).
    ``diverged`` (one of DIVERGED_RULES) applies to the evaluation return only. ``budget`` < 1 reads the value
    at that fraction of the planned frames instead of the end (the window then ends at budget x planned); a
    trial that diverged before it counts as diverged, one that diverged later is read there like the others.
    """
    check_diverged(diverged)
    columns = [*store.trials.columns, "value", "final_frame", "n_points"]
    rows = []
    for trial, points in _finished_points(store, metric):
        planned = _planned_frames(trial)
        if not np.isfinite(planned):
            planned = float(points[FRAME].max())
        end = budget * planned
        if trial["status"] == DIVERGED and (budget >= 1.0 or float(points[FRAME].max()) < end):
            used = points.iloc[[-1]]
            value = float(used[metric].iloc[0])
            if metric == EVAL_RETURN:
                value = diverged_value(store, trial, value, diverged)
        else:
            before = points[points[FRAME] <= end] if budget < 1.0 else points
            used = before[before[FRAME] >= (budget - window) * planned]
            if used.empty:
                used = before.iloc[[-1]] if len(before) else points.iloc[[0]]
            value = float(used[metric].mean())
        rows.append(
            {**trial.to_dict(), "value": value, "final_frame": int(used[FRAME].max()), "n_points": int(len(used))}
        )
    return pd.DataFrame(rows, columns=columns)


def _finished_points(store: Store, metric: str) -> Iterator[tuple[pd.Series, pd.DataFrame]]:
    """Each finished trial (a row of ``store.trials``) with its finite (frame, trial, ``metric``) points, in the
    store's trial order; trials without any are left out."""
    trials = store.trials[store.trials["status"].isin(FINISHED)]
    if trials.empty or store.data.empty:
        return
    data = store.data[[FRAME, "trial", metric]]
    data = data[np.isfinite(data[metric].to_numpy(dtype=float))]
    by_trial = dict(list(data.groupby("trial", sort=False)))
    for _, trial in trials.iterrows():
        points = by_trial.get(trial["trial"])
        if points is not None and not points.empty:
            yield trial, points


def area_scores(store: Store, diverged: str = DEFAULT_DIVERGED) -> pd.DataFrame:
    """One row per finished trial: ``value`` = the area under its return curve / its planned frames.

    Columns as ``final_scores`` (``final_frame``: its last evaluation used, ``n_points``: evaluations).
    """
    check_diverged(diverged)
    columns = [*store.trials.columns, "value", "final_frame", "n_points"]
    rows = []
    for trial, points in _finished_points(store, EVAL_RETURN):
        points = points.drop_duplicates(FRAME, keep="last").sort_values(FRAME)
        frames = points[FRAME].to_numpy(dtype=float)
        returns = points[EVAL_RETURN].to_numpy(dtype=float)
        planned = _planned_frames(trial)
        if not np.isfinite(planned) or planned <= 0:
            planned = float(frames.max())
        if planned <= 0:
            continue
        if trial["status"] == DIVERGED:  # from its divergence on, the value the final-return rule gives it
            held = diverged_value(store, trial, float(returns[-1]), diverged)
            frames, returns = np.append(frames, frames[-1]), np.append(returns, held)
        keep = frames <= planned
        frames = np.append(frames[keep], planned)
        returns = np.append(returns[keep], returns[keep][-1] if keep.any() else returns[0])
        area = float(np.sum(np.diff(frames) * (returns[1:] + returns[:-1]) / 2.0)) / planned
        rows.append(
            {**trial.to_dict(), "value": area, "final_frame": int(points[FRAME].max()), "n_points": int(len(points))}
        )
    return pd.DataFrame(rows, columns=columns)


def cells_of(store: Store) -> pd.DataFrame:
    """The grid's cells in their fixed order: cell, method, cell_rank and the first config of each."""
    first = store.trials.sort_values(["cell_rank", "trial"]).drop_duplicates("cell")
    return first.reset_index(drop=True)


def series(store: Store, metric: str) -> pd.DataFrame:
    """(trial, frame) -> value of ``metric``, one value per trial and frame (the last logged wins)."""
    data = store.data
    if data.empty or metric not in data:
        return pd.DataFrame(columns=["trial", "task", "cell", FRAME, "value"])
    keep = data["status"].isin(CURVE_STATUSES) & np.isfinite(data[metric].to_numpy(dtype=float))
    part = data.loc[keep, ["trial", "task", "cell", FRAME, metric]].rename(columns={metric: "value"})
    return part.drop_duplicates(["trial", FRAME], keep="last").reset_index(drop=True)


def curves(
    store: Store, metric: str, settings: Settings, hold_diverged: bool | None = None
) -> dict[tuple[str, str], pd.DataFrame]:
    """{(task, cell): IQM and CI over seeds at every frame logged for ``metric``}.

    Each table has columns frame, point, low, high, n (seeds with a value at that frame).
    ``hold_diverged`` defaults to True for the evaluation return: a diverged seed then holds the value of
    ``settings.diverged`` after its divergence (see the module docstring).
    """
    if hold_diverged is None:
        hold_diverged = metric == EVAL_RETURN
    points = series(store, metric)
    trial_rows = store.trials.set_index("trial")
    status, planned = trial_rows["status"], trial_rows["planned_frames"]
    out: dict[tuple[str, str], pd.DataFrame] = {}
    for (task, cell), part in points.groupby(["task", "cell"], sort=True):
        table = part.pivot(index=FRAME, columns="trial", values="value").sort_index()
        if hold_diverged:
            for trial in table.columns:
                if status.get(trial) != DIVERGED:
                    continue
                column = table[trial]
                last = column.last_valid_index()
                planned_frames = planned.get(trial)
                try:
                    limit = np.inf if planned_frames is None else float(planned_frames)
                except (TypeError, ValueError):
                    limit = np.inf
                after = (table.index > last) & (table.index <= limit)
                held = float(column[last])
                if metric == EVAL_RETURN:  # the diverged rule is about the return (module docstring)
                    row = trial_rows.loc[trial]
                    assert isinstance(row, pd.Series)  # trial paths are unique: one row
                    held = diverged_value(store, row, held, settings.diverged)
                table.loc[after, trial] = held
        rows = []
        for frame, values in zip(table.index, table.to_numpy(dtype=float)):
            finite = values[np.isfinite(values)]
            if not finite.size:
                continue
            est = stats.interval(finite, stats.iqm, settings.reps, settings.confidence, settings.seed)
            rows.append({FRAME: int(frame), "point": est.point, "low": est.low, "high": est.high, "n": finite.size})
        out[(str(task), str(cell))] = pd.DataFrame(rows, columns=[FRAME, "point", "low", "high", "n"])
    return out


@dataclass(frozen=True)
class CellSummary:
    grid: str
    task: str
    cell: str
    method: str
    n_trials: int  # every trial of the cell on the task
    n_final: int  # trials behind the final estimate (completed + diverged)
    n_diverged: int
    n_running: int
    n_failed: int
    n_interrupted: int
    n_new: int
    frames_min: int | None  # final-evaluation frames behind the estimate
    frames_max: int | None
    estimate: stats.Interval | None
    q_bias: stats.Interval | None


def cell_summaries(store: Store, settings: Settings) -> list[CellSummary]:
    """Final return (IQM over seeds, CI) and seed/status counts for every (task, cell) of one grid."""
    finals = final_scores(store, EVAL_RETURN, settings.final_window, settings.diverged)
    q_finals = final_scores(store, Q_BIAS_MEAN, settings.final_window, settings.diverged)
    out = []
    trials = store.trials
    for (task, _rank), group in trials.groupby(["task", "cell_rank"], sort=True):
        cell, method = group["cell"].iloc[0], group["method"].iloc[0]
        mine = finals[(finals["task"] == task) & (finals["cell"] == cell)]
        q_mine = q_finals[(q_finals["task"] == task) & (q_finals["cell"] == cell)]
        counts = group["status"].value_counts()
        estimate = (
            stats.interval(mine["value"].to_numpy(), stats.iqm, settings.reps, settings.confidence, settings.seed)
            if len(mine)
            else None
        )
        q_est = (
            stats.interval(q_mine["value"].to_numpy(), stats.iqm, settings.reps, settings.confidence, settings.seed)
            if len(q_mine)
            else None
        )
        out.append(
            CellSummary(
                grid=str(group["grid"].iloc[0]),
                task=str(task),
                cell=str(cell),
                method=str(method),
                n_trials=len(group),
                n_final=len(mine),
                n_diverged=int(counts.get(DIVERGED, 0)),
                n_running=int(counts.get(RUNNING, 0)),
                n_interrupted=int(counts.get(INTERRUPTED, 0)),
                n_failed=int(counts.get(FAILED, 0)),
                n_new=int(counts.get(NEW, 0)),
                frames_min=int(mine["final_frame"].min()) if len(mine) else None,
                frames_max=int(mine["final_frame"].max()) if len(mine) else None,
                estimate=estimate,
                q_bias=q_est,
            )
        )
    return out


def normalized_finals(store: Store, settings: Settings, budget: float = 1.0, area: bool = False) -> pd.DataFrame:
    """Final returns (at ``budget``; or, with ``area``, the areas under the return curves) divided by each
    task's maximum (stats.max_return); adds ``score`` and ``task_max``.

    A Gymnasium task whose best final return is not positive has nothing to normalize by: its rows are left out
    (``unnormalizable_tasks`` names such tasks for the report).
    """
    finals = (
        area_scores(store, settings.diverged)
        if area
        else final_scores(store, EVAL_RETURN, settings.final_window, settings.diverged, budget)
    )
    if finals.empty:
        return finals.assign(score=pd.Series(dtype=float), task_max=pd.Series(dtype=float))
    maxima = {}
    for task, group in finals.groupby("task"):
        try:
            maxima[task] = stats.max_return(str(task), float(group["value"].max()))
        except ValueError:
            continue
    finals = finals[finals["task"].isin(list(maxima))].copy()
    finals["task_max"] = finals["task"].map(maxima).astype(float)
    finals["score"] = finals["value"] / finals["task_max"]
    return finals.reset_index(drop=True)


def unnormalizable_tasks(store: Store, settings: Settings) -> list[str]:
    """Tasks with final returns but no maximum to normalize by (left out of every aggregate across tasks)."""
    finals = final_scores(store, EVAL_RETURN, settings.final_window, settings.diverged)
    normalized = set(normalized_finals(store, settings)["task"])
    return sorted(set(finals["task"]) - normalized)


def per_task_scores(finals: pd.DataFrame, cell: str, tasks: list[str], column: str = "score") -> list[np.ndarray]:
    """One array of a cell's scores per task, in ``tasks`` order (empty arrays where it has none)."""
    mine = finals[finals["cell"] == cell]
    return [mine.loc[mine["task"] == task, column].to_numpy(dtype=float) for task in tasks]


def aggregate(finals: pd.DataFrame, settings: Settings) -> dict[str, dict[str, stats.Interval]]:
    """{cell: {statistic name: Interval}} over normalized scores of all tasks (method.md §8)."""
    tasks = sorted(finals["task"].unique())
    out: dict[str, dict[str, stats.Interval]] = {}
    order = finals.drop_duplicates("cell").sort_values("cell_rank")["cell"]
    for cell in order:
        per_task = [t for t in per_task_scores(finals, cell, tasks) if t.size]
        out[cell] = {
            name: stats.interval(per_task, fn, settings.reps, settings.confidence, settings.seed)
            for name, fn in stats.AGGREGATES.items()
        }
    return out


def improvement(finals: pd.DataFrame, settings: Settings, target: str = "MA-BN") -> dict[str, stats.Interval]:
    """{baseline cell: P(target > baseline)} on the tasks both have, for every other cell of the grid."""
    targets = finals[finals["method"] == target].sort_values("cell_rank")["cell"]
    if targets.empty:
        return {}
    target_cell = targets.iloc[0]
    tasks = sorted(finals["task"].unique())
    x = per_task_scores(finals, target_cell, tasks)
    out = {}
    order = finals.drop_duplicates("cell").sort_values("cell_rank")["cell"]
    for cell in order:
        if cell == target_cell:
            continue
        y = per_task_scores(finals, cell, tasks)
        shared = [(a, b) for a, b in zip(x, y, strict=True) if a.size and b.size]
        if not shared:
            continue
        out[cell] = stats.poi_interval(
            [a for a, _ in shared], [b for _, b in shared], settings.reps, settings.confidence, settings.seed
        )
    return out


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The statistics options shared by ``analysis.figures`` and ``analysis.claims`` (fields of ``Settings``)."""
    parser.add_argument("--reps", type=int, default=stats.DEFAULT_REPS, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--seed", type=int, default=stats.DEFAULT_SEED, help="bootstrap RNG seed (default: 0)")
    parser.add_argument(
        "--confidence",
        type=float,
        default=stats.DEFAULT_CONFIDENCE,
        help="confidence level of the intervals (default: 0.95)",
    )
    parser.add_argument(
        "--final-window",
        type=float,
        default=DEFAULT_FINAL_WINDOW,
        help="fraction of a trial's frames whose evaluations make its final return (default: 0.1)",
    )
    parser.add_argument(
        "--diverged",
        choices=DIVERGED_RULES,
        default=DEFAULT_DIVERGED,
        help="what a diverged trial's return counts as: task_min (default) = the lowest evaluation "
        "return of any trial of the store on its task, since a diverged trial has no policy "
        "left; last = its last evaluation before divergence (the optimistic reading)",
    )


def settings_from(parser: argparse.ArgumentParser, args: argparse.Namespace, dpi: int = 150) -> Settings:
    """``Settings`` from the parsed options; a bad value exits through ``parser.error`` (status 2)."""
    if args.reps < 1 or dpi < 10 or not 0 < args.confidence < 1 or not 0 <= args.final_window <= 1:
        parser.error("--reps must be >= 1, --dpi >= 10, --confidence in (0, 1), --final-window in [0, 1]")
    return Settings(
        reps=args.reps,
        confidence=args.confidence,
        seed=args.seed,
        final_window=args.final_window,
        dpi=dpi,
        diverged=args.diverged,
    )
