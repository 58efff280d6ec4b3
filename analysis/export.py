"""Per-grid data exports next to the figures: ``runs.parquet``, ``final.csv`` and ``final.tex``.

- ``runs.parquet``: every metric row of every trial of the grid (one row per ``metrics.csv`` row, as
  ``Store.data`` holds it): the ids and labels (grid, trial, trial_id, cell, method, cell_id, task, seed, status,
  cell_rank), each config key as a column, then frame and the metrics. Config values that mix types within a
  column (or are lists or mappings) are written as text so any store can be written; everything else keeps its
  type. Load it with ``pandas.read_parquet`` (``docs/explore_results.ipynb`` does).
- ``final.csv``: the final-return table of ``report.md``, one row per task and cell, with the same numbers
  (``analysis.summary.cell_summaries``): seeds behind the estimate, status counts, the IQM over seeds with its CI,
  plus the plain mean of the same final returns; full float precision, empty where there is no estimate.
- ``final.tex``: that table as a booktabs ``tabular`` (``\\usepackage{booktabs}``), special characters escaped,
  to paste into a paper.

Only pandas (with pyarrow) and the standard library: no torch, no orchestrator.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.store import Store
from analysis.summary import DIVERGED_TEXT, CellSummary, Settings, cell_summaries, final_scores
from contract.metrics import EVAL_RETURN

if TYPE_CHECKING:  # figures passes its GridData (cached summaries); no import of matplotlib for this alone
    from analysis.plots import GridData

RUNS_FILE = "runs.parquet"
FINAL_CSV = "final.csv"
FINAL_TEX = "final.tex"
EXPORT_FILES = (RUNS_FILE, FINAL_CSV, FINAL_TEX)

FINAL_COLUMNS = (
    "grid",
    "task",
    "cell",
    "method",
    "n_seeds",
    "n_trials",
    "n_diverged",
    "n_running",
    "n_interrupted",
    "n_failed",
    "n_new",
    "frames_min",
    "frames_max",
    "iqm",
    "ci_low",
    "ci_high",
    "mean",
    "q_bias_iqm",
    "confidence",
    "diverged_rule",
)


# ------------------------------------------------------------------ runs.parquet
def _plain(value: Any) -> Any:
    """A cell of a column whose values Arrow cannot hold as one type: lists and mappings as JSON, else text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every object column of mixed (or nested) value types turned into text."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        values = [v for v in out[column] if not (v is None or (isinstance(v, float) and math.isnan(v)))]
        kinds = {
            bool
            if isinstance(v, (bool, np.bool_))
            else float
            if isinstance(v, (int, float, np.integer, np.floating))
            else str
            if isinstance(v, str)
            else object
            for v in values
        }
        if len(kinds) > 1 or object in kinds:
            out[column] = out[column].map(_plain).astype(object)
    return out


def runs_table(store: Store) -> pd.DataFrame:
    """Every metric row of ``store`` (one grid, or several) with its trial's ids, labels and config columns."""
    return _arrow_safe(store.data.reset_index(drop=True))


def write_runs(store: Store, path: Path) -> Path:
    runs_table(store).to_parquet(path, engine="pyarrow", index=False)
    return path


# ------------------------------------------------------------------ final.csv
def final_table(
    store: Store, settings: Settings, summaries: Sequence[CellSummary] | None = None, finals: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per (task, cell) of one grid, in report.md's order, with report.md's final-return numbers.

    ``summaries`` and ``finals`` (``cell_summaries`` and ``final_scores`` of the evaluation return under
    ``settings``) are computed when not given.
    """
    if summaries is None:
        summaries = cell_summaries(store, settings)
    if finals is None:
        finals = final_scores(store, EVAL_RETURN, settings.final_window, settings.diverged)
    nan = float("nan")
    rows = []
    for s in summaries:
        mine = finals[(finals["task"] == s.task) & (finals["cell"] == s.cell)]["value"].to_numpy(dtype=float)
        est = s.estimate
        rows.append(
            {
                "grid": s.grid,
                "task": s.task,
                "cell": s.cell,
                "method": s.method,
                "n_seeds": s.n_final,
                "n_trials": s.n_trials,
                "n_diverged": s.n_diverged,
                "n_running": s.n_running,
                "n_interrupted": s.n_interrupted,
                "n_failed": s.n_failed,
                "n_new": s.n_new,
                "frames_min": s.frames_min,
                "frames_max": s.frames_max,
                "iqm": est.point if est else nan,
                "ci_low": est.low if est else nan,
                "ci_high": est.high if est else nan,
                "mean": float(mine.mean()) if mine.size else nan,
                "q_bias_iqm": s.q_bias.point if s.q_bias else nan,
                "confidence": settings.confidence,
                "diverged_rule": settings.diverged,
            }
        )
    table = pd.DataFrame(rows, columns=list(FINAL_COLUMNS))
    for column in ("frames_min", "frames_max"):
        table[column] = table[column].astype("Int64")  # integers, empty where no trial finished
    return table


def write_final_csv(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False, lineterminator="\n")
    return path


# ------------------------------------------------------------------ final.tex
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # the non-ASCII characters of the labels (axis names, dashes), so pdflatex needs no extra package
    "ρ": r"\ensuremath{\rho}",
    "–": "--",
    "—": "---",
    "−": r"\ensuremath{-}",
    "×": r"\ensuremath{\times}",
    "≥": r"\ensuremath{\geq}",
    "≤": r"\ensuremath{\leq}",
}


def latex_escape(text: object) -> str:
    """``text`` as LaTeX text mode: the ten special characters escaped, a few symbols as math, and control
    characters (a newline or a carriage return would end a ``%`` comment or a table row) as spaces: names come
    from the store, which others can write into (issue #19)."""
    return "".join(" " if _is_control(ch) else _LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _is_control(ch: str) -> bool:
    return ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029\u0085"


def _tex_num(value: float | None, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "--"
    text = f"{value:.{digits}f}"
    return r"\ensuremath{-}" + text[1:] if text.startswith("-") else text


def final_latex(table: pd.DataFrame, settings: Settings, grid: str | None = None) -> str:
    """``table`` (``final_table``) as a booktabs tabular: task, cell, seeds, diverged, IQM, CI, mean.

    Numbers have report.md's rounding (one decimal); the task is written on the first row of its block, blocks are
    separated by rules. Lines starting with ``%`` say where the numbers come from.
    """
    pct = f"{settings.confidence:.0%}"
    name = grid if grid is not None else (str(table["grid"].iloc[0]) if len(table) else "")
    lines = [
        f"% Final return per task and cell, grid {latex_escape(name)} "
        "(bnsweep: python -m analysis.figures; needs booktabs).",
        f"% IQM over seeds of each trial's final return (mean of its evaluations in the last "
        f"{settings.final_window:.0%} of its frames), {pct} percentile-bootstrap CI ({settings.reps} resamples, "
        f"seed {settings.seed}); diverged trials score {DIVERGED_TEXT[settings.diverged]}.",
        r"\begin{tabular}{llrrrcr}",
        r"\toprule",
        rf"Task & Cell & Seeds & Diverged & IQM & {latex_escape(pct)} CI & Mean \\",
        r"\midrule",
    ]
    previous = None
    for row in table.to_dict("records"):
        if previous is not None and row["task"] != previous:
            lines.append(r"\midrule")
        task = latex_escape(row["task"]) if row["task"] != previous else ""
        previous = row["task"]
        low, high = row["ci_low"], row["ci_high"]
        ci = f"[{_tex_num(low)}, {_tex_num(high)}]" if np.isfinite(low) and np.isfinite(high) else "--"
        lines.append(
            f"{task} & {latex_escape(row['cell'])} & {row['n_seeds']} & {row['n_diverged']} & {_tex_num(row['iqm'])} & "
            f"{ci} & {_tex_num(row['mean'])} \\\\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ one grid
def write_exports(grid: GridData, directory: Path | str) -> list[Path]:
    """Write runs.parquet, final.csv and final.tex of one grid into ``directory``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = final_table(grid.store, grid.settings, grid.summaries(), grid.finals(EVAL_RETURN))
    tex = directory / FINAL_TEX
    tex.write_text(final_latex(table, grid.settings, grid.name))
    return [write_runs(grid.store, directory / RUNS_FILE), write_final_csv(table, directory / FINAL_CSV), tex]
