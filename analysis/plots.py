"""The figures of method.md §8, one function per figure, each registered with its caption (``figure``).

A grid names the figures it shows (its YAML key ``figures``, read through ``contract.grid_shows``); a grid that
names none gets the training curves (``GENERIC_FIGURES``).

Every figure function takes a ``GridData`` and an output directory and returns the files it wrote. Figures
never fail on partial data: a panel without data says so in words, so the set of files for a grid is the
same from its first finished trial to its last.
"""

from __future__ import annotations

import itertools
import numbers
import textwrap
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from analysis import stats
from analysis.store import AXIS_NAMES, Store, format_value
from analysis.style import FRAMES_FORMATTER, METHOD_COLORS, RC, cell_styles, method_color, plt, save
from analysis.summary import (
    CURVE_STATUSES,
    CellSummary,
    Settings,
    aggregate,
    cell_summaries,
    cells_of,
    curves,
    final_scores,
    improvement,
    normalized_finals,
)
from contract.grid_shows import GridShows, shipped_shows
from contract.metrics import BN_MISMATCH, COVERAGE, EVAL_RETURN, FRAME, Q_BIAS_MEAN, Q_BIAS_STD, STATE_COVERAGE
from contract.modes import STEP_NAMES, step_is_train
from contract.status import DIVERGED, RUNNING

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.container import Container
    from matplotlib.figure import Figure as MplFigure

FRAMES_LABEL = "environment frames (action repeat included)"
RETURN_LABEL = "eval episode return"
STEP_TITLES = ("Actor-I", "Actor-II", "Critic-I", "Critic-II", "Critic-III")
BAND_NOTE = "line: IQM over seeds; band: 95% stratified-bootstrap CI"
MAX_HIGHLIGHTED = 10  # cells drawn with CI bands in one curve panel before the rest become background lines
BACKGROUND = "\0background"  # legend key of the background lines (not a possible cell label)

METRIC_LABELS = {
    EVAL_RETURN: RETURN_LABEL,
    Q_BIAS_MEAN: "relative Q-bias, mean over states\n(Q - G) / (|mean G| + 1e-3)",
    Q_BIAS_STD: "relative Q-bias, std over states",
    COVERAGE: "visited state-action cells (count)",
    STATE_COVERAGE: "visited state cells, scaled (count)",
    BN_MISMATCH: "Critic-I batch vs running BN stats\n(distance)",
}


@dataclass
class GridData:
    """One grid's store plus the cached numbers its figures share."""

    store: Store
    settings: Settings

    def __post_init__(self) -> None:
        self.name = str(self.store.trials["grid"].iloc[0])
        self.tasks = sorted(self.store.trials["task"].unique())
        self.cells_table = cells_of(self.store)
        self.cells = list(self.cells_table["cell"])
        self.method = dict(zip(self.cells_table["cell"], self.cells_table["method"], strict=True))
        self.styles = cell_styles(zip(self.cells, [self.method[c] for c in self.cells], strict=True))
        self._cell_rows = self.cells_table.set_index("cell").to_dict("index")
        optimizers = {c: self._cell_rows[c].get("optimizer") for c in self.cells}
        if len(set(optimizers.values())) > 1:  # Adam vs SGD reads the same in every figure: solid vs dashed
            for cell, optimizer in optimizers.items():
                self.styles[cell]["linestyle"] = "--" if optimizer == "sgd" else "-"
        self._curves: dict[str, dict] = {}
        self._summaries: list[CellSummary] | None = None
        self._finals: dict[str, pd.DataFrame] = {}
        self._seeds: dict[tuple[str, str | None], str] = {}
        self._summary_index: dict[tuple[str, str], CellSummary] | None = None

    def curves(self, metric: str) -> dict[tuple[str, str], pd.DataFrame]:
        if metric not in self._curves:
            self._curves[metric] = curves(self.store, metric, self.settings)
        return self._curves[metric]

    def summaries(self) -> list[CellSummary]:
        if self._summaries is None:
            self._summaries = cell_summaries(self.store, self.settings)
        return self._summaries

    def summary(self, task: str, cell: str) -> CellSummary | None:
        if self._summary_index is None:
            self._summary_index = {(s.task, s.cell): s for s in self.summaries()}
        return self._summary_index.get((task, cell))

    def finals(self, metric: str = EVAL_RETURN) -> pd.DataFrame:
        if metric not in self._finals:
            self._finals[metric] = final_scores(self.store, metric, self.settings.final_window, self.settings.diverged)
        return self._finals[metric]

    def normalized(self) -> pd.DataFrame:
        """Final returns with ``score`` = return / task maximum (cached: several figures share it)."""
        if "normalized" not in self._finals:
            self._finals["normalized"] = normalized_finals(self.store, self.settings)
        return self._finals["normalized"]

    def cell_value(self, cell: str, column: str) -> object:
        """A config value of the cell (the same for all its trials, except the task presets)."""
        if column not in self.cells_table:
            return None
        value = self._cell_rows[cell][column]
        return None if isinstance(value, float) and np.isnan(value) else value

    def seeds_text(self, cell: str, task: str | None = None) -> str:
        """'n=5' (seeds with data: completed, diverged or running), with diverged/running counts."""
        key = (cell, task)
        if key not in self._seeds:
            self._seeds[key] = self._seeds_text(cell, task)
        return self._seeds[key]

    def _seeds_text(self, cell: str, task: str | None) -> str:
        trials = self.store.trials
        mine = trials[(trials["cell"] == cell) & trials["status"].isin(CURVE_STATUSES)]
        if task is not None:
            mine = mine[mine["task"] == task]
        counts = mine.groupby("task").size()
        if counts.empty:
            return "n=0"
        low, high = int(counts.min()), int(counts.max())
        text = f"n={low}" if low == high else f"n={low}-{high}"
        several = len(counts) > 1
        if several:
            text += " per task"
        for status in (DIVERGED, RUNNING):
            k = int((mine["status"] == status).sum())
            if k:
                text += f", {k} of {len(mine)} runs {status}" if several else f", {k} {status}"
        return text


Figure = Callable[["GridData", Path], list[Path]]


@dataclass(frozen=True)
class RegisteredFigure:
    name: str  # the file stem it writes: <out>/<grid>/<name>.png|pdf, and the name a grid's `figures` key uses
    caption: str  # the report's line under the figure
    draw: Figure


FIGURES: dict[str, RegisteredFigure] = {}  # every figure by name, in the order of this file


def figure(name: str, caption: str) -> Callable[[Figure], Figure]:
    """Register a figure function under the file stem it writes, with the caption the report prints for it."""

    def register(fn: Figure) -> Figure:
        if name in FIGURES:
            raise ValueError(f"two figures named {name!r}")
        FIGURES[name] = RegisteredFigure(name, caption, fn)
        return fn

    return register


def _context(grid: GridData) -> AbstractContextManager[None]:
    return matplotlib.rc_context({**RC, "savefig.dpi": grid.settings.dpi})


def _no_data(ax: Axes, text: str = "no data yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _title(fig: MplFigure, grid: GridData, what: str) -> None:
    """A title wrapped to the figure's width (about 13 characters per inch at 10 pt).

    Each line is its own single-line text above the layout area rather than one multi-line suptitle:
    matplotlib 3.11 ignores font features (our "-liga", see style.save) on multi-line text.
    """
    width = max(30, int(fig.get_figwidth() * 13))
    lines = [line for part in f"{grid.name}: {what}".split("\n") for line in textwrap.wrap(part, width)]
    line_height = 0.19 / fig.get_figheight()  # 10 pt text plus leading, as a fraction of the figure height
    pad = 0.05 / fig.get_figheight()
    for i, line in enumerate(lines):
        fig.text(0.5, 1.0 - pad - (i + 0.5) * line_height, line, ha="center", va="center", fontsize=10)
    engine = fig.get_layout_engine()
    if isinstance(engine, (ConstrainedLayoutEngine, TightLayoutEngine)):  # the engines with a layout rect
        engine.set(rect=(0.0, 0.0, 1.0, 1.0 - 2 * pad - len(lines) * line_height))


def _legend_below(fig: MplFigure, handles: Sequence[Artist | Container], labels: Sequence[str]) -> None:
    """A legend under the panels; ``handles``: artists, or containers such as an errorbar's."""
    if handles:
        # Columns that fit the figure's width (about 0.065 in per character at 7.5 pt, plus the line sample).
        per_column = max(len(label) for label in labels) * 0.065 + 0.6
        ncol = max(1, min(len(labels), int(fig.get_figwidth() / per_column)))
        # matplotlib draws containers (its legend handler map has one for ErrorbarContainer); its stubs name only
        # Artist handles.
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)  # type: ignore[call-overload]


def _panel_width(n_columns: int) -> float:
    """Figure width for ``n_columns`` task panels; one panel alone still gets room for a legend."""
    return max(6.0, 3.8 * n_columns + 0.6)


def _curve_panels(
    grid: GridData, metrics: list[str], out_dir: Path, name: str, what: str, zero_line: tuple[str, ...] = ()
) -> list[Path]:
    """Rows = metrics, columns = tasks; one line + CI band per cell."""
    tasks = grid.tasks
    with _context(grid):
        fig, axes = plt.subplots(
            len(metrics),
            len(tasks),
            figsize=(_panel_width(len(tasks)), 2.5 * len(metrics) + 1.4),
            squeeze=False,
            layout="constrained",
        )
        handles: dict[str, Artist | Container] = {}
        single_seed = True
        # With many cells (the 32 modes) only the paper's methods get bands; the rest are thin background lines.
        many = len(grid.cells) > MAX_HIGHLIGHTED
        background = {c for c in grid.cells if many and grid.method[c] not in METHOD_COLORS}
        for row, metric in enumerate(metrics):
            table = grid.curves(metric)
            for col, task in enumerate(tasks):
                ax = axes[row][col]
                drawn = False
                for cell in sorted(grid.cells, key=lambda c: c not in background):  # background first, below
                    df = table.get((task, cell))
                    if df is None or df.empty:
                        continue
                    style = grid.styles[cell]
                    x = df[FRAME].to_numpy()
                    if cell in background:
                        ax.plot(x, df["point"], color=style["color"], linewidth=0.8, alpha=0.6)
                        handles.setdefault(BACKGROUND, Line2D([], [], color="0.55", linewidth=0.8))
                        drawn = True
                        continue
                    (line,) = ax.plot(
                        x,
                        df["point"],
                        color=style["color"],
                        linestyle=style["linestyle"],
                        marker=style["marker"] if len(x) <= 12 else None,
                        markersize=3,
                    )
                    ax.fill_between(x, df["low"], df["high"], color=style["color"], alpha=0.18, linewidth=0)
                    single_seed &= bool((df["n"] <= 1).all())
                    handles.setdefault(cell, line)
                    drawn = True
                if not drawn:
                    _no_data(ax)
                    continue
                if metric in zero_line:
                    ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle=":")
                ax.xaxis.set_major_formatter(FRAMES_FORMATTER)
                if row == len(metrics) - 1:
                    ax.set_xlabel(FRAMES_LABEL)
                if col == 0:
                    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
                if row == 0:
                    ax.set_title(task)
        order = [c for c in grid.cells if c in handles]
        labels = [f"{c} ({grid.seeds_text(c)})" for c in order]
        if BACKGROUND in handles:
            order.append(BACKGROUND)
            labels.append(f"{len(background)} other cells (IQM only; see the ranked figure)")
        _legend_below(fig, [handles[c] for c in order], labels)
        note = "single seed per cell: no CI band" if single_seed and handles else BAND_NOTE
        _title(fig, grid, f"{what} ({note})")
        return save(fig, out_dir, name)


@figure("curves", "evaluation return, relative Q-bias mean and Q-bias std vs frames; IQM over seeds, 95% CI bands")
def fig_curves(grid: GridData, out_dir: Path) -> list[Path]:
    """Return, Q-bias mean and Q-bias std vs frames: the training curves (a grid that names no figures gets these)."""
    return _curve_panels(
        grid,
        [EVAL_RETURN, Q_BIAS_MEAN, Q_BIAS_STD],
        out_dir,
        "curves",
        "evaluation return and relative Q-bias vs frames",
        zero_line=(Q_BIAS_MEAN,),
    )


@figure("bn_mismatch", "distance between Critic-I batch and running BN statistics vs frames")
def fig_bn_mismatch(grid: GridData, out_dir: Path) -> list[Path]:
    return _curve_panels(
        grid, [BN_MISMATCH], out_dir, "bn_mismatch", "Critic-I batch vs running statistics (cells without BN have none)"
    )


@figure("coverage", "state cells (scaled; the claim's proxy) and state-action cells visited by training vs frames")
def fig_coverage(grid: GridData, out_dir: Path) -> list[Path]:
    # coverage/state_cells is the claim's proxy (method.md §7); coverage/cells is drawn beside it for comparison
    return _curve_panels(grid, [STATE_COVERAGE, COVERAGE], out_dir, "coverage", "exploration coverage vs frames")


# ------------------------------------------------------------------ final-return figures
def _final_text(s: CellSummary | None) -> str:
    if s is None or s.estimate is None:
        return "no finished trial"
    return f"n={s.n_final}" + (f" ({s.n_diverged} div.)" if s.n_diverged else "")


def _series_key(grid: GridData, cell: str, axis: str) -> str:
    """The cell's label without the swept axis: the line a point belongs to ('MA-BN, lr=1e-4' -> 'MA-BN')."""
    parts = [p for p in cell.split(", ") if not p.startswith(_axis_prefix(axis))]
    return ", ".join(parts)


def _axis_prefix(axis: str) -> str:
    return f"{AXIS_NAMES.get(axis, axis)}="


def _is_number(x: object) -> TypeGuard[numbers.Real]:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)) and bool(np.isfinite(float(x)))


def _vs_axis_panels(
    grid: GridData,
    axis: str,
    metrics: list[str],
    xlabel: str,
    out_dir: Path,
    name: str,
    what: str,
    logx: bool = False,
    line_when: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Final value of each metric vs a swept config axis; cells outside the sweep become reference bands."""
    tasks = grid.tasks
    values = {c: grid.cell_value(c, axis) for c in grid.cells}
    finals = {m: grid.finals(m) for m in metrics}
    line_when = line_when or (lambda cell: True)
    with _context(grid):
        fig, axes = plt.subplots(
            len(metrics),
            len(tasks),
            figsize=(_panel_width(len(tasks)), 2.8 * len(metrics) + 1.4),
            squeeze=False,
            layout="constrained",
        )
        handles: dict[str, Artist | Container] = {}
        for row, metric in enumerate(metrics):
            for col, task in enumerate(tasks):
                ax = axes[row][col]
                table = finals[metric]
                table = table[table["task"] == task]
                series: dict[str, list[tuple[float, stats.Interval, str]]] = {}
                refs: list[tuple[str, stats.Interval]] = []
                for cell in grid.cells:
                    scores = table.loc[table["cell"] == cell, "value"].to_numpy(dtype=float)
                    if not scores.size:
                        continue
                    est = stats.interval(
                        scores, stats.iqm, grid.settings.reps, grid.settings.confidence, grid.settings.seed
                    )
                    x = values.get(cell)
                    if line_when(cell) and _is_number(x):
                        series.setdefault(_series_key(grid, cell, axis), []).append((float(x), est, cell))
                    else:
                        refs.append((cell, est))
                if not series and not refs:
                    _no_data(ax, "no finished trial yet")
                    continue
                xs_all = sorted({x for pts in series.values() for x, _, _ in pts})
                for key, pts in series.items():
                    pts.sort(key=lambda p: p[0])
                    style = grid.styles[pts[0][2]]
                    color = method_color(grid.method[pts[0][2]])
                    xs = [p[0] for p in pts]
                    ys = [p[1].point for p in pts]
                    err = [[p[1].point - p[1].low for p in pts], [p[1].high - p[1].point for p in pts]]
                    cont = ax.errorbar(
                        xs, ys, yerr=err, color=color, marker=style["marker"], capsize=3, linestyle="-", markersize=4
                    )
                    handles.setdefault(key, cont)
                for cell, est in refs:
                    color = grid.styles[cell]["color"]
                    line = ax.axhline(est.point, color=color, linestyle="--", linewidth=1.2)
                    ax.axhspan(est.low, est.high, color=color, alpha=0.12, linewidth=0)
                    handles.setdefault(cell, line)
                if logx:
                    ax.set_xscale("log")
                if xs_all:
                    ax.set_xticks(xs_all)
                    ax.set_xticklabels([_tick(x) for x in xs_all], rotation=45 if len(xs_all) > 4 else 0)
                    ax.minorticks_off()
                if metric == Q_BIAS_MEAN:
                    ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle=":")
                if row == len(metrics) - 1:
                    ax.set_xlabel(xlabel)
                if col == 0:
                    ax.set_ylabel("final " + METRIC_LABELS.get(metric, metric))
                if row == 0:
                    ax.set_title(task)
        labels = []
        for key in handles:
            cells = [c for c in grid.cells if c == key or _series_key(grid, c, axis) == key]
            labels.append(f"{key} ({grid.seeds_text(cells[0])}{' per point' if len(cells) > 1 else ''})")
        _legend_below(fig, list(handles.values()), labels)
        _title(fig, grid, f"{what} (IQM over seeds, 95% CI; dashed: cells outside the sweep)")
        return save(fig, out_dir, name)


def _tick(x: float) -> str:
    return format_value(float(x))


@figure("vs_mixing_ratio", "final return and final Q-bias vs buffer-mixing ratio ρ")
def fig_buffer_mixing(grid: GridData, out_dir: Path) -> list[Path]:
    def critic_i_train(cell: str) -> bool:
        mode = grid.cell_value(cell, "bn_mode")
        return isinstance(mode, str) and len(mode) == len(STEP_NAMES) and step_is_train(mode, "critic_i")

    return _vs_axis_panels(
        grid,
        "buffer_mix_ratio",
        [EVAL_RETURN, Q_BIAS_MEAN],
        "buffer-mixing ratio ρ (replay rows per policy row in Critic-I)",
        out_dir,
        "vs_mixing_ratio",
        "final return and Q-bias vs buffer-mixing ratio",
        line_when=critic_i_train,
    )


@figure("vs_learning_rate", "final return vs learning rate, one line per normalization")
def fig_learning_rate(grid: GridData, out_dir: Path) -> list[Path]:
    return _vs_axis_panels(
        grid,
        "lr",
        [EVAL_RETURN],
        "learning rate (log scale)",
        out_dir,
        "vs_learning_rate",
        "final return vs learning rate per normalization",
        logx=True,
    )


def fig_final_bars(grid: GridData, out_dir: Path, name: str = "final_bars", what: str = "final return") -> list[Path]:
    """Bars of the final return per cell and task; hatched bars for SGD cells."""
    tasks = grid.tasks
    with _context(grid):
        width = max(3.8, 0.45 * len(grid.cells) + 1.5)
        fig, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), 4.2), squeeze=False, layout="constrained")
        for col, task in enumerate(tasks):
            ax = axes[0][col]
            any_bar = False
            for i, cell in enumerate(grid.cells):
                s = grid.summary(task, cell)
                if s is None or s.estimate is None:
                    ax.text(i, 0, "-", ha="center", va="bottom", color="0.4")
                    continue
                est = s.estimate
                sgd = grid.cell_value(cell, "optimizer") == "sgd"
                ax.bar(
                    i,
                    est.point,
                    color=grid.styles[cell]["color"],
                    alpha=0.85,
                    hatch="//" if sgd else None,
                    edgecolor="white" if not sgd else "0.2",
                    linewidth=0.5,
                )
                ax.errorbar(
                    [i],
                    [est.point],
                    yerr=[[est.point - est.low], [est.high - est.point]],
                    color="black",
                    capsize=3,
                    linewidth=1,
                )
                ax.annotate(
                    _final_text(s), (i, est.high), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=6.5
                )
                any_bar = True
            ax.set_xticks(range(len(grid.cells)))
            ax.set_xticklabels(grid.cells, rotation=35, ha="right")
            ax.set_title(task)
            if col == 0:
                ax.set_ylabel("final " + RETURN_LABEL)
            if not any_bar:
                ax.text(0.5, 0.5, "no finished trial yet", ha="center", transform=ax.transAxes, color="0.4")
        _title(fig, grid, f"{what} (IQM over seeds, 95% CI; hatched: SGD)")
        return save(fig, out_dir, name)


@figure("final_bars", "final return per cell (Adam vs SGD)")
def fig_optimizer_bars(grid: GridData, out_dir: Path) -> list[Path]:
    return fig_final_bars(grid, out_dir, "final_bars", "Adam vs SGD, final return")


# ------------------------------------------------------------------ the 32 BN modes
def _mode_estimates(grid: GridData) -> tuple[dict[str, tuple[str, stats.Interval | None, int]], str, bool]:
    """{cell: (mode, final estimate, n)} for BN cells; the value's name; whether it is normalized."""
    finals = grid.normalized()
    normalized = len(grid.tasks) > 1
    out: dict[str, tuple[str, stats.Interval | None, int]] = {}
    for cell in grid.cells:
        mode = grid.cell_value(cell, "bn_mode")
        if not (isinstance(mode, str) and len(mode) == 5) or not grid.method[cell].startswith(("BN", "MA-BN")):
            continue
        mine = finals[finals["cell"] == cell] if len(finals) else finals
        if mine.empty:
            out[cell] = (mode, None, 0)
            continue
        column = "score" if normalized else "value"
        per_task = [mine.loc[mine["task"] == t, column].to_numpy(dtype=float) for t in grid.tasks]
        per_task = [t for t in per_task if t.size]
        est = stats.interval(per_task, stats.iqm, grid.settings.reps, grid.settings.confidence, grid.settings.seed)
        out[cell] = (mode, est, len(mine))
    what = "IQM of normalized final return over all tasks" if normalized else f"final return on {grid.tasks[0]}"
    return out, what, normalized


def _reference_estimates(grid: GridData, normalized: bool) -> list[tuple[str, stats.Interval]]:
    finals = grid.normalized()
    refs = []
    for cell in grid.cells:
        if grid.method[cell] not in ("Origin", "LayerNorm"):
            continue
        mine = finals[finals["cell"] == cell] if len(finals) else finals
        if mine.empty:
            continue
        column = "score" if normalized else "value"
        per_task = [mine.loc[mine["task"] == t, column].to_numpy(dtype=float) for t in grid.tasks]
        refs.append(
            (
                cell,
                stats.interval(
                    [t for t in per_task if t.size],
                    stats.iqm,
                    grid.settings.reps,
                    grid.settings.confidence,
                    grid.settings.seed,
                ),
            )
        )
    return refs


@figure("modes_ranked", "the BN mode strings ranked by final return, MA-BN highlighted")
def fig_bn_modes_ranked(grid: GridData, out_dir: Path) -> list[Path]:
    """Ranked bars of the final return of every mode string, each string spelled out as five letter tiles."""
    estimates, what, normalized = _mode_estimates(grid)
    ranked = sorted(
        estimates.items(),
        key=lambda kv: (kv[1][1] is None, -(kv[1][1].point if kv[1][1] else 0), grid.cells.index(kv[0])),
    )
    rows = max(len(ranked), 1)
    with _context(grid):
        fig = plt.figure(figsize=(8.0, 0.26 * rows + 1.9), layout="constrained")
        gs = fig.add_gridspec(1, 2, width_ratios=[1.3, 4.5])
        ax_l, ax_b = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        ax_l.set_xlim(0, 5)
        for ax in (ax_l, ax_b):
            ax.set_ylim(rows - 0.5, -0.5)
        ax_l.set_axis_off()
        for j, step in enumerate(STEP_TITLES):
            ax_l.text(j + 0.5, -0.75, step, rotation=55, ha="left", va="bottom", fontsize=7.5)
        if not ranked:
            _no_data(ax_b, "no BN cell in this grid")
        for i, (cell, (mode, est, n)) in enumerate(ranked):
            highlight = mode == "TTETT"
            for j, letter in enumerate(mode):
                train = letter == "T"
                ax_l.add_patch(Rectangle((j + 0.06, i - 0.42), 0.88, 0.84, color="#2f5d8a" if train else "#e6e6e6"))
                ax_l.text(
                    j + 0.5,
                    i,
                    letter,
                    ha="center",
                    va="center",
                    family="DejaVu Sans Mono",
                    fontweight="bold",
                    fontsize=8,
                    color="white" if train else "black",
                )
            if highlight:
                for ax, x0, w in ((ax_l, 0.0, 5.0),):
                    ax.add_patch(
                        Rectangle(
                            (x0, i - 0.5),
                            w,
                            1.0,
                            fill=False,
                            edgecolor=method_color("MA-BN"),
                            linewidth=1.8,
                            clip_on=False,
                        )
                    )
                ax_b.axhspan(i - 0.5, i + 0.5, color=method_color("MA-BN"), alpha=0.1, linewidth=0)
            color = method_color(grid.method[cell])
            if est is None:
                ax_b.text(
                    0.01,
                    i,
                    "no finished trial",
                    va="center",
                    fontsize=7,
                    color="0.4",
                    transform=ax_b.get_yaxis_transform(),
                )
                continue
            ax_b.barh(
                i, est.point, color=color if grid.method[cell] in ("MA-BN", "BN (TTTTT)") else "#8fa8c0", height=0.7
            )
            ax_b.errorbar(
                [est.point],
                [i],
                xerr=[[est.point - est.low], [est.high - est.point]],
                color="black",
                capsize=2,
                linewidth=0.9,
            )
            label = f"n={n}" + (" MA-BN" if highlight else "") + (" (TTTTT)" if mode == "TTTTT" else "")
            ax_b.annotate(
                label,
                (est.high, i),
                textcoords="offset points",
                xytext=(4, 0),
                va="center",
                fontsize=6.5,
                fontweight="bold" if highlight else "normal",
            )
        for cell, est in _reference_estimates(grid, normalized):
            color = method_color(grid.method[cell])
            ax_b.axvline(
                est.point, color=color, linestyle="--", linewidth=1.2, label=f"{cell} ({grid.seeds_text(cell)})"
            )
            ax_b.axvspan(est.low, est.high, color=color, alpha=0.1, linewidth=0)
        ax_b.set_yticks(range(len(ranked)))
        ax_b.set_yticklabels([f"#{i + 1}" for i in range(len(ranked))], fontsize=7)
        ax_b.set_xlabel(
            ("final normalized score (return / task max)" if normalized else "final " + RETURN_LABEL)
            + "; IQM over seeds, 95% CI"
        )
        ax_b.grid(axis="y", visible=False)
        if ax_b.get_legend_handles_labels()[0]:
            ax_b.legend(loc="lower right", fontsize=7)
        _title(
            fig,
            grid,
            f"{len(ranked)} of 32 BN modes ranked by {what}\n"
            "tiles: step in train (T, dark) or eval (E, light) mode; red frame: MA-BN (TTETT)",
        )
        return save(fig, out_dir, "modes_ranked")


ACTOR_MODES = tuple("".join(p) for p in itertools.product("TE", repeat=2))
CRITIC_MODES = tuple("".join(p) for p in itertools.product("TE", repeat=3))


@figure("modes_heatmap", "final return of the 32 mode strings as actor (rows) x critic (columns) letters")
def fig_bn_modes_heatmap(grid: GridData, out_dir: Path) -> list[Path]:
    """4 actor modes x 8 critic modes = the 32 strings, one heat map per task (+ normalized aggregate)."""
    finals = grid.normalized()
    mode_of = {c: grid.cell_value(c, "bn_mode") for c in grid.cells if grid.method[c].startswith(("BN", "MA-BN"))}
    panels = [(t, "value", t) for t in grid.tasks]
    if len(grid.tasks) > 1:
        panels.append(("all tasks: normalized IQM", "score", None))
    with _context(grid):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False, layout="constrained")
        for col, (title, column, task) in enumerate(panels):
            ax = axes[0][col]
            grid_values = np.full((len(ACTOR_MODES), len(CRITIC_MODES)), np.nan)
            counts = np.zeros_like(grid_values, dtype=int)
            for cell, mode in mode_of.items():
                if not (isinstance(mode, str) and len(mode) == 5) or finals.empty:
                    continue
                mine = finals[finals["cell"] == cell]
                if task is not None:
                    mine = mine[mine["task"] == task]
                per_task = [mine.loc[mine["task"] == t, column].to_numpy(dtype=float) for t in grid.tasks]
                per_task = [t for t in per_task if t.size]
                if not per_task:
                    continue
                r, c = ACTOR_MODES.index(mode[:2]), CRITIC_MODES.index(mode[2:])
                grid_values[r, c] = float(stats.iqm(per_task))
                counts[r, c] = len(mine)
            masked = np.ma.masked_invalid(grid_values)
            cmap = plt.get_cmap("viridis").with_extremes(bad="#f0f0f0")
            finite = grid_values[np.isfinite(grid_values)]
            image = ax.imshow(
                masked,
                cmap=cmap,
                aspect="auto",
                vmin=float(finite.min()) if finite.size else 0.0,
                vmax=float(finite.max()) if finite.size and finite.max() > finite.min() else None,
            )
            for r, c in itertools.product(range(len(ACTOR_MODES)), range(len(CRITIC_MODES))):
                value = grid_values[r, c]
                text = "-" if not np.isfinite(value) else (f"{value:.2f}" if column == "score" else f"{value:.0f}")
                bright = np.isfinite(value) and finite.size and value > finite.min() + 0.6 * (np.ptp(finite) or 1)
                ax.text(
                    c,
                    r,
                    text + (f"\nn={counts[r, c]}" if counts[r, c] else ""),
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="black" if bright or not np.isfinite(value) else "white",
                )
            r, c = ACTOR_MODES.index("TT"), CRITIC_MODES.index("ETT")
            ax.add_patch(
                Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=method_color("MA-BN"), linewidth=2.2)
            )
            ax.set_xticks(range(len(CRITIC_MODES)))
            ax.set_xticklabels(CRITIC_MODES, family="DejaVu Sans Mono")
            ax.set_yticks(range(len(ACTOR_MODES)))
            ax.set_yticklabels(ACTOR_MODES, family="DejaVu Sans Mono")
            ax.set_xlabel("critic letters: Critic-I, Critic-II, Critic-III")
            ax.set_ylabel("actor letters: Actor-I, Actor-II")
            ax.grid(False)
            ax.set_title(title)
            fig.colorbar(
                image,
                ax=ax,
                shrink=0.9,
                label="normalized final return" if column == "score" else "final " + RETURN_LABEL,
            )
        _title(
            fig,
            grid,
            "final return of the 32 mode strings (IQM over seeds; red box: MA-BN TTETT; -: not run or not finished)",
        )
        return save(fig, out_dir, "modes_heatmap")


# ------------------------------------------------------------------ across tasks
def _interval_row(ax: Axes, y: float, est: stats.Interval, color: str) -> None:
    ax.plot([est.low, est.high], [y, y], color=color, linewidth=7, alpha=0.45, solid_capstyle="butt")
    ax.plot([est.point, est.point], [y - 0.3, y + 0.3], color=color, linewidth=2)


@figure("aggregate", "Median / IQM / Mean / Optimality gap of normalized final return across tasks, 95% CIs")
def fig_aggregate(grid: GridData, out_dir: Path) -> list[Path]:
    """rliable's interval-estimate plot: Median, IQM, Mean and Optimality gap of normalized scores per method."""
    finals = grid.normalized()
    estimates = aggregate(finals, grid.settings) if len(finals) else {}
    cells = [c for c in grid.cells if c in estimates]
    names = list(stats.AGGREGATES)
    with _context(grid):
        fig, axes = plt.subplots(
            1,
            len(names),
            figsize=(3.0 * len(names), 0.45 * max(len(cells), 1) + 1.9),
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        for j, name in enumerate(names):
            ax = axes[0][j]
            if not cells:
                _no_data(ax, "no finished trial yet")
                continue
            for i, cell in enumerate(cells):
                _interval_row(ax, i, estimates[cell][name], grid.styles[cell]["color"])
            ax.set_title(name + (" (lower is better)" if name == "Optimality gap" else ""))
            ax.set_xlabel("normalized score")
            ax.set_yticks(range(len(cells)))
            ax.set_yticklabels([f"{c} ({grid.seeds_text(c)})" for c in cells])
            ax.set_ylim(len(cells) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
        tasks = ", ".join(grid.tasks)
        _title(
            fig,
            grid,
            f"aggregate over {len(grid.tasks)} task(s) [{tasks}]; final return / task max "
            f"(DMC: 1000); bar: 95% stratified-bootstrap CI, tick: point estimate",
        )
        return save(fig, out_dir, "aggregate")


@figure("probability_of_improvement", "probability of improvement of MA-BN over each baseline, 95% CIs")
def fig_improvement(grid: GridData, out_dir: Path) -> list[Path]:
    finals = grid.normalized()
    poi = improvement(finals, grid.settings) if len(finals) else {}
    with _context(grid):
        fig, ax = plt.subplots(figsize=(6.0, 0.5 * max(len(poi), 1) + 1.7), layout="constrained")
        if not poi:
            _no_data(ax, "needs finished MA-BN and baseline trials on a shared task")
        for i, (cell, est) in enumerate(poi.items()):
            _interval_row(ax, i, est, grid.styles[cell]["color"])
        if poi:
            ax.axvline(0.5, color="0.3", linestyle=":", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_yticks(range(len(poi)))
            ax.set_yticklabels([f"P(MA-BN > {c})" for c in poi])
            ax.set_ylim(len(poi) - 0.5, -0.5)
            ax.set_xlabel("probability of improvement (0.5: no difference)")
            ax.grid(axis="y", visible=False)
        _title(
            fig,
            grid,
            "probability of improvement of MA-BN over each baseline\n(per task over seed pairs, "
            "averaged over tasks; 95% stratified-bootstrap CI)",
        )
        return save(fig, out_dir, "probability_of_improvement")


GENERIC_FIGURES = ("curves",)  # what a grid that names no figures gets
GENERIC: tuple[Figure, ...] = tuple(FIGURES[name].draw for name in GENERIC_FIGURES)


def figure_names(grid: str, shows: GridShows | None = None) -> list[str]:
    """Stems of the files a grid's figures write (each as .png and .pdf), in the order the grid names them.

    ``shows``: the grid's declarations (default: its shipped grid file's); names no figure function has are left
    out (``unknown_figures`` says which), and a grid that names none gets ``GENERIC_FIGURES``.
    """
    shows = shipped_shows().get(grid) if shows is None else shows
    names = [name for name in (shows.figures if shows else ()) if name in FIGURES]
    return names or list(GENERIC_FIGURES)


def unknown_figures(shows: GridShows) -> list[str]:
    """The figure names in ``shows`` that no figure function has (a store recorded by another version)."""
    return [name for name in shows.figures if name not in FIGURES]


def figures_for(grid: str, shows: GridShows | None = None) -> tuple[Figure, ...]:
    """The figure functions of ``grid`` (see ``figure_names``)."""
    return tuple(FIGURES[name].draw for name in figure_names(grid, shows))


def caption(name: str) -> str:
    """The report's caption of the figure file stem ``name`` (the stem itself for a file no figure writes)."""
    return FIGURES[name].caption if name in FIGURES else name


# Which shipped grid draws which figures: built from the `figures` key of each grid file in sweeps/.
FIGURES_BY_GRID: dict[str, tuple[Figure, ...]] = {
    grid: figures_for(grid, shows) for grid, shows in shipped_shows().items() if shows.figures
}
