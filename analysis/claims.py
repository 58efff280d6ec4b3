"""The paper's findings as comparisons on the result store: the claims table of ``figures/report.md``.

    python -m analysis.claims [--results results] [--diverged task_min|last] [--reps N] ...

prints the table (the report holds the same one). Each finding is one ``Claim`` in ``CLAIMS``: the grid that
tests it, which cells it compares (selected by the labels and config values of ``analysis.store``, never by
position), the metric, the effect and the direction it needs. docs/analysis.md ("Claims") repeats the
definitions; the rules, in short:

- **Scores**: a trial's final return (``analysis.summary``, with the diverged rule of the settings) divided by
  its task's maximum (``stats.max_return``: 1000 on dm_control), so effects are in normalized score (0.1 = 100
  return points on a DMC task); coverage is divided by the largest final coverage of the grid on the task.
- **Effect** of a claim: a function of the compared cells' IQMs (over seeds, and over tasks pooled when there
  are several), with a stratified-bootstrap CI (``stats.effect_interval``: every cell resampled on its own,
  within each task), and the probability of improvement of the cell the claim favours (``stats.poi_interval``).
- **Verdict**: *supported* when the whole CI lies on the claimed side of the claim's threshold (0, or minus the
  tolerance of a "close to" claim), *contradicted* when it lies wholly on the other side, *inconclusive*
  otherwise, and always inconclusive with fewer than ``MIN_SEEDS`` seeds in a compared cell (one seed shows no
  spread, so a bootstrap CI would be a point).
- **Seeds needed** (inconclusive): the CI half-width h is taken to shrink as 1/sqrt(n), so at the observed
  spread it falls below the distance d between the effect and the threshold at n = ceil(n0 (h/d)^2) seeds per
  cell (n0: the fewest seeds of a compared cell now; at least n0 + 1). No number when the effect sits on the
  threshold.
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from agent.metrics import COVERAGE, EVAL_RETURN
from analysis import stats
from analysis.store import AXIS_NAMES, Store, StoreError, axis_text, load_store
from analysis.summary import Settings, final_scores, normalized_finals, per_task_scores

MIN_SEEDS = 2  # a verdict needs spread: with one seed per cell the bootstrap CI is a point
CLOSE_TOLERANCE = 0.1  # "close to": at most 0.1 normalized score below (100 return points on a DMC task)
RANGE_FRACTION = 0.8  # "keeps a high return" at a learning rate: IQM >= 80% of the best IQM of the comparison

MANY_SEEDS = 1000  # seeds-needed figures above this are shown as "more than": the effect is noise-sized
ON_THRESHOLD = 1e-9  # |effect - threshold| at or below this is rounding: the effect sits on the threshold

KINDS = ("difference", "relative", "slope", "range")
VERDICTS = ("supported", "contradicted", "inconclusive", "no data")


@dataclass(frozen=True)
class Claim:
    """One finding of the paper as a comparison of cells of one grid.

    ``x`` and ``y`` select the cells: each maps a column of the store's trial table (``method``, a config key
    such as ``optimizer``) to the value it must have. The effect (``kind``) is, on the IQMs of the selected
    cells' scores:

    - ``difference``: IQM(x) - IQM(y) (one cell each);
    - ``relative``: IQM(x) / IQM(y) - 1 (one cell each);
    - ``slope``: the least-squares slope of IQM(x at each value of ``axis``) over that value (``y`` unused);
    - ``range``: (number of ``axis`` values where IQM(x) >= ``range_fraction`` x best) minus the same for y,
      best being the highest IQM of x or y at any ``axis`` value both have.

    It must exceed ``threshold`` (0: x is better; -tolerance: x comes close to y).
    """

    grid: str
    statement: str  # the paper's finding, in words
    kind: str
    x: Mapping[str, Any]
    y: Mapping[str, Any] | None = None
    metric: str = EVAL_RETURN
    axis: str | None = None
    threshold: float = 0.0
    range_fraction: float = RANGE_FRACTION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.grid}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if (self.kind in ("slope", "range")) != (self.axis is not None):
            raise ValueError(f"{self.grid}: a {self.kind} claim {'needs' if self.axis is None else 'takes no'} axis")
        if (self.kind == "slope") != (self.y is None):
            raise ValueError(f"{self.grid}: a {self.kind} claim {'takes no' if self.y is not None else 'needs'} y")

    @property
    def x_name(self) -> str:
        return selector_text(self.x)

    @property
    def y_name(self) -> str:
        return selector_text(self.y) if self.y is not None else ""

    def definition(self) -> str:
        """The comparison in words, as the report prints it."""
        score = "final coverage / task max" if self.metric == COVERAGE else "final return / task max"
        axis = AXIS_NAMES.get(self.axis or "", self.axis)
        if self.kind == "difference":
            text = f"IQM({self.x_name}) - IQM({self.y_name}) of {score}"
        elif self.kind == "relative":
            text = f"IQM({self.x_name}) / IQM({self.y_name}) - 1 of {score}"
        elif self.kind == "slope":
            text = f"least-squares slope of IQM({self.x_name}) of {score} over {axis}"
        else:
            text = (
                f"{axis} values where IQM({self.x_name}) >= {self.range_fraction:.0%} of the best IQM, minus "
                f"the same for {self.y_name} ({score})"
            )
        return text + (f"; needs > {self.threshold:g}" if self.threshold else "; needs > 0")


def selector_text(selector: Mapping[str, Any]) -> str:
    """``{"method": "MA-BN", "optimizer": "sgd"}`` -> ``MA-BN, SGD``, as the store labels cells."""
    return ", ".join(str(v) if k == "method" else axis_text(k, v) for k, v in selector.items())


# The table of claims (issue #10; docs/analysis.md "Claims"). Cells are chosen by the store's method label
# (analysis.store.method_label: MA-BN = BatchNorm with TTETT, BN (TTTTT) = Critic-I in train mode, ...) and config
# values, so a grid's cells are found whatever their order or names in the YAML.
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "critic_i_mode",
        "Critic-I in eval mode (E, MA-BN) beats train mode (T)",
        "difference",
        x={"method": "MA-BN"},
        y={"method": "BN (TTTTT)"},
    ),
    Claim(
        "buffer_mixing",
        "with Critic-I = T the return rises with the buffer-mixing ratio ρ",
        "slope",
        x={"method": "BN (TTTTT)"},
        axis="buffer_mix_ratio",
    ),
    Claim(
        "learning_rate",
        "MA-BN keeps a high return over a wider range of learning rates than Origin",
        "range",
        x={"method": "MA-BN"},
        y={"method": "Origin"},
        axis="lr",
    ),
    Claim(
        "optimizer",
        "SGD with MA-BN comes close to Adam (with MA-BN)",
        "difference",
        x={"method": "MA-BN", "optimizer": "sgd"},
        y={"method": "MA-BN", "optimizer": "adam"},
        threshold=-CLOSE_TOLERANCE,
    ),
    Claim(
        "exploration",
        "MA-BN covers more of the state-action space than Origin",
        "relative",
        x={"method": "MA-BN"},
        y={"method": "Origin"},
        metric=COVERAGE,
    ),
    Claim(
        "normalization",
        "MA-BN's aggregate IQM is above Origin's",
        "difference",
        x={"method": "MA-BN"},
        y={"method": "Origin"},
    ),
    Claim(
        "normalization",
        "MA-BN's aggregate IQM is above LayerNorm's",
        "difference",
        x={"method": "MA-BN"},
        y={"method": "LayerNorm"},
    ),
)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    profile: str | None  # the orchestrator profile of the trials judged (None: the grid has one or none)
    verdict: str  # one of VERDICTS
    note: str = ""  # why there is no verdict (no data, or too few seeds)
    detail: str = ""  # what the effect's point estimate counts (range claims)
    effect: stats.Interval | None = None
    poi: stats.Interval | None = None
    poi_text: str = ""  # P(what > what)
    seeds: int = 0  # the fewest seeds of a compared cell on a task (n0 of the seeds-needed rule)
    seeds_needed: int | None = None
    runs: int = 0  # trials behind the effect
    diverged: int = 0  # ... of which diverged
    cells: tuple[str, ...] = field(default_factory=tuple)  # the store's labels of the compared cells

    @property
    def grid_label(self) -> str:
        return self.claim.grid + (f" ({self.profile})" if self.profile else "")

    def verdict_text(self) -> str:
        if self.verdict == "no data":
            return f"no data: {self.note}"
        if self.verdict in ("supported", "contradicted"):
            return f"{self.verdict} at {self.seeds} seeds"
        if self.seeds < MIN_SEEDS:
            return f"inconclusive: {self.note}"
        if self.seeds_needed is None:
            needed = "the effect sits on the threshold: no number of seeds decides it"
        elif self.seeds_needed > MANY_SEEDS:
            needed = f"more than {MANY_SEEDS} seeds per cell needed at this spread: the effect is tiny next to it"
        else:
            needed = f"≈ {self.seeds_needed} seeds per cell needed at this spread"
        return f"inconclusive at {self.seeds} seeds ({needed})"


def seeds_needed(effect: stats.Interval, threshold: float, seeds: int) -> int | None:
    """Seeds per cell at which the CI half-width, shrinking as 1/sqrt(n), falls below |effect - threshold|."""
    distance = abs(effect.point - threshold)
    half_width = (effect.high - effect.low) / 2.0
    # An effect within rounding of the threshold (e.g. -0.1 - 1e-17 against -0.1) sits on it: no n decides it.
    if distance <= ON_THRESHOLD or not math.isfinite(distance) or not math.isfinite(half_width):
        return None
    return max(seeds + 1, math.ceil(seeds * (half_width / distance) ** 2))


def verdict_of(effect: stats.Interval, threshold: float, seeds: int) -> tuple[str, int | None]:
    """(verdict, seeds needed) by the rules of the module docstring."""
    if seeds < MIN_SEEDS:
        return "inconclusive", None
    if effect.low > threshold:
        return "supported", None
    if effect.high < threshold:
        return "contradicted", None
    return "inconclusive", seeds_needed(effect, threshold, seeds)


# ------------------------------------------------------------------ scores
def claim_scores(store: Store, metric: str, settings: Settings) -> pd.DataFrame:
    """Final values of ``metric`` per trial of one grid with ``score`` = value / the task's maximum."""
    if metric == EVAL_RETURN:
        return normalized_finals(store, settings)
    finals = final_scores(store, metric, settings.final_window, settings.diverged)
    if finals.empty:
        return finals.assign(score=pd.Series(dtype=float))
    # No metric but the return has a known maximum: divide by the grid's largest final value on the task, so
    # several tasks pool on one scale (the rule Gymnasium returns follow).
    best = finals.groupby("task")["value"].transform("max").astype(float)
    finals = finals.assign(score=finals["value"] / best.where(best > 0))
    return finals[np.isfinite(finals["score"].to_numpy(dtype=float))].reset_index(drop=True)


def _same(value: Any, wanted: Any) -> bool:
    # Config numbers come back from YAML and pandas as float or numpy types: 1e-4 must match 0.0001.
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (value, wanted)):
        return math.isclose(float(value), float(wanted), rel_tol=1e-9)
    return value == wanted


def select(scores: pd.DataFrame, selector: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of ``scores`` whose columns have the selector's values (a missing column matches nothing)."""
    keep = np.ones(len(scores), dtype=bool)
    for column, wanted in selector.items():
        if column not in scores:
            return scores.iloc[0:0]
        keep &= scores[column].map(lambda v, w=wanted: _same(v, w)).to_numpy(dtype=bool)
    return scores[keep]


class _NoVerdict(Exception):
    """The store cannot judge the claim (no matching cell, several where one is meant, ...): the message says why."""


def _one_cell(rows: pd.DataFrame, what: str) -> str:
    cells = list(dict.fromkeys(rows.sort_values("cell_rank")["cell"]))
    if not cells:
        raise _NoVerdict(f"no finished trial of {what}")
    if len(cells) > 1:
        raise _NoVerdict(f"{what} matches {len(cells)} cells ({'; '.join(cells)}); the claim compares one")
    return cells[0]


def _cells_by_level(rows: pd.DataFrame, axis: str, what: str) -> dict[float, str]:
    """{axis value: the one cell of ``rows`` there}."""
    if axis not in rows:
        raise _NoVerdict(f"no {axis} column in the store")
    out = {}
    for level, part in rows.groupby(axis, sort=True):
        # a numeric axis (claims compare levels of lr, rho, ...): groupby types its keys as any pandas scalar
        out[float(cast(float, level))] = _one_cell(part, f"{what} at {axis_text(axis, level)}")
    return out


def _shared_tasks(scores: pd.DataFrame, cells: Sequence[str]) -> list[str]:
    """Tasks on which every cell has a score (the strata of the bootstrap must be the same for all)."""
    tasks = [set(scores.loc[scores["cell"] == cell, "task"]) for cell in cells]
    shared = sorted(set.intersection(*tasks)) if tasks else []
    if not shared:
        raise _NoVerdict("the compared cells share no task with finished trials")
    return shared


def _slope(levels: np.ndarray) -> Callable[[list[np.ndarray]], np.ndarray]:
    centred = levels - levels.mean()
    weights = centred / (centred**2).sum()  # least squares: slope = sum(w_i v_i)
    return lambda values: sum(w * v for w, v in zip(weights, values, strict=True))


def _good_counts(values: list[np.ndarray], k: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis values where x (the first k IQMs) and y (the last k) reach ``fraction`` x the best IQM of all 2k."""
    stacked = np.stack(values)
    good = stacked >= fraction * stacked.max(axis=0)
    return good[:k].sum(axis=0), good[k:].sum(axis=0)


def _range(k: int, fraction: float) -> Callable[[list[np.ndarray]], np.ndarray]:
    def effect(values: list[np.ndarray]) -> np.ndarray:
        good_x, good_y = _good_counts(values, k, fraction)
        return good_x.astype(np.float64) - good_y

    return effect


def _relative(values: list[np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return values[0] / values[1] - 1.0


def _difference(values: list[np.ndarray]) -> np.ndarray:
    return values[0] - values[1]


@dataclass(frozen=True)
class _Comparison:
    groups: list[list[np.ndarray]]  # per compared cell: one score array per shared task
    effect: Callable[[list[np.ndarray]], np.ndarray]
    poi_x: list[np.ndarray]
    poi_y: list[np.ndarray]
    poi_text: str
    cells: list[str]
    tasks: list[str]
    detail: str = ""


def evaluate(claim: Claim, scores: pd.DataFrame, settings: Settings, profile: str | None = None) -> ClaimResult:
    """Judge ``claim`` on ``scores`` (``claim_scores`` of its grid, one profile)."""
    try:
        comparison = _comparison(claim, scores)
    except _NoVerdict as why:
        return ClaimResult(claim, profile, "no data", note=str(why))
    effect = stats.effect_interval(
        comparison.groups, comparison.effect, stats.iqm, settings.reps, settings.confidence, settings.seed
    )
    if not math.isfinite(effect.point):
        return ClaimResult(
            claim,
            profile,
            "no data",
            note="the effect is not finite (a zero IQM to divide by)",
            cells=tuple(comparison.cells),
        )
    poi = stats.poi_interval(comparison.poi_x, comparison.poi_y, settings.reps, settings.confidence, settings.seed)
    used = scores[scores["cell"].isin(comparison.cells) & scores["task"].isin(comparison.tasks)]
    seeds = int(used.groupby(["cell", "task"]).size().min())
    verdict, needed = verdict_of(effect, claim.threshold, seeds)
    note = (
        f"{seeds} seed in a compared cell: no spread to judge by; run at least {MIN_SEEDS}" if seeds < MIN_SEEDS else ""
    )
    return ClaimResult(
        claim,
        profile,
        verdict,
        note=note,
        detail=comparison.detail,
        effect=effect,
        poi=poi,
        poi_text=comparison.poi_text,
        seeds=seeds,
        seeds_needed=needed,
        runs=len(used),
        diverged=int((used["status"] == "diverged").sum()),
        cells=tuple(comparison.cells),
    )


def _comparison(claim: Claim, scores: pd.DataFrame) -> _Comparison:
    """The cells, groups and effect of ``claim`` on ``scores``; raises _NoVerdict when the store can't tell."""
    x_rows = select(scores, claim.x)
    if claim.kind in ("difference", "relative"):
        x_cell = _one_cell(x_rows, claim.x_name)
        y_cell = _one_cell(select(scores, claim.y or {}), claim.y_name)
        tasks = _shared_tasks(scores, [x_cell, y_cell])
        x, y = per_task_scores(scores, x_cell, tasks), per_task_scores(scores, y_cell, tasks)
        effect = _difference if claim.kind == "difference" else _relative
        return _Comparison([x, y], effect, x, y, f"P({x_cell} > {y_cell})", [x_cell, y_cell], tasks)
    axis = claim.axis or ""
    axis_name = AXIS_NAMES.get(axis, axis)
    if claim.kind == "slope":
        by_level = _cells_by_level(x_rows, axis, claim.x_name)
        if len(by_level) < 2:
            raise _NoVerdict(
                f"{claim.x_name} has finished trials at {len(by_level)} value(s) of {axis_name}; a slope needs 2"
            )
        cells = list(by_level.values())
        tasks = _shared_tasks(scores, cells)
        groups = [per_task_scores(scores, cell, tasks) for cell in cells]
        # PoI between the ends of the sweep: the chance that a run at the largest ρ beats one at the smallest.
        return _Comparison(
            groups,
            _slope(np.array(list(by_level), dtype=np.float64)),
            groups[-1],
            groups[0],
            f"P({cells[-1]} > {cells[0]})",
            cells,
            tasks,
        )
    x_levels = _cells_by_level(x_rows, axis, claim.x_name)
    y_levels = _cells_by_level(select(scores, claim.y or {}), axis, claim.y_name)
    levels = sorted(set(x_levels) & set(y_levels))
    if not levels:
        raise _NoVerdict(f"{claim.x_name} and {claim.y_name} share no {axis_name} value with finished trials")
    k = len(levels)
    cells = [x_levels[v] for v in levels] + [y_levels[v] for v in levels]
    tasks = _shared_tasks(scores, cells)
    groups = [per_task_scores(scores, cell, tasks) for cell in cells]
    good_x, good_y = _good_counts([np.asarray(stats.iqm(g)) for g in groups], k, claim.range_fraction)
    detail = f"{claim.x_name} {int(good_x)} of {k}, {claim.y_name} {int(good_y)} of {k}"
    # PoI over the (task, axis value) strata: the chance that x beats y at a value of the sweep.
    return _Comparison(
        groups,
        _range(k, claim.range_fraction),
        [t for g in groups[:k] for t in g],
        [t for g in groups[k:] for t in g],
        f"P({claim.x_name} > {claim.y_name}), mean over {axis_name}",
        cells,
        tasks,
        detail,
    )


def evaluate_claims(store: Store, settings: Settings, claims: Sequence[Claim] = CLAIMS) -> list[ClaimResult]:
    """Every claim judged on its grid of ``store``, per orchestrator profile when the grid holds several."""
    out = []
    scores_by: dict[tuple[str, str], pd.DataFrame] = {}
    for claim in claims:
        if claim.grid not in store.grids:
            out.append(ClaimResult(claim, None, "no data", note=f"grid {claim.grid} not in the store"))
            continue
        key = (claim.grid, claim.metric)
        if key not in scores_by:
            scores_by[key] = claim_scores(store.grid(claim.grid), claim.metric, settings)
        scores = scores_by[key]
        profiles = sorted({str(p) for p in store.grid(claim.grid).trials["profile"] if isinstance(p, str)})
        if len(profiles) <= 1:  # one profile (or none recorded): judge the grid as a whole
            out.append(evaluate(claim, scores, settings))
            continue
        for profile in profiles:  # a local and a paper run of one grid are separate evidence
            mine = scores[scores["profile"] == profile] if len(scores) else scores
            out.append(evaluate(claim, mine, settings, profile))
    return out


# ------------------------------------------------------------------ text
def _effect_text(result: ClaimResult) -> str:
    est = result.effect
    if est is None:
        return "–"
    if result.claim.kind == "relative":
        text = f"{est.point:+.1%} [{est.low:+.1%}, {est.high:+.1%}]"
    elif result.claim.kind == "range":
        text = f"{est.point:+.0f} [{est.low:+.0f}, {est.high:+.0f}]"
    else:
        text = f"{est.point:+.3f} [{est.low:+.3f}, {est.high:+.3f}]"
    if result.claim.kind == "slope":
        text += f" per unit {AXIS_NAMES.get(result.claim.axis or '', result.claim.axis)}"
    return text + (f" ({result.detail})" if result.detail else "")


def table_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    """The claims table's rows: grid, finding, comparison, effect [CI], PoI [CI], runs (diverged), verdict."""
    rows = []
    for r in results:
        poi = f"{r.poi_text} = {r.poi.point:.2f} [{r.poi.low:.2f}, {r.poi.high:.2f}]" if r.poi else "–"
        runs = f"{r.runs} ({r.diverged} diverged)" if r.effect else "–"
        rows.append(
            [r.grid_label, r.claim.statement, r.claim.definition(), _effect_text(r), poi, runs, r.verdict_text()]
        )
    return rows


def header(confidence: float) -> list[str]:
    """The claims table's column names (``table_rows`` fills them)."""
    ci = f"[{confidence:.0%} CI]"
    return [
        "grid",
        "the paper's finding",
        "comparison",
        f"effect {ci}",
        f"probability of improvement {ci}",
        "runs (diverged)",
        "verdict",
    ]


def _parser(prog: str) -> argparse.ArgumentParser:
    from analysis.figures import add_settings_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description="Print the claims table of a result store (as in report.md)."
    )
    parser.add_argument("--results", default="results", help="result store root (default: results)")
    add_settings_arguments(parser)
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m analysis.claims") -> int:
    """``prog``: the program name in usage and error lines (``bnsweep claims`` through the bnsweep command)."""
    from analysis.figures import settings_from
    from analysis.report import claims_lines

    parser = _parser(prog)
    args = parser.parse_args(argv)
    settings = settings_from(parser, args)
    try:
        store = load_store(args.results)
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(claims_lines(store, settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
