"""The paper's findings as comparisons on the result store: the claims table of ``figures/report.md``.

    python -m analysis.claims [--results results] [--diverged task_min|last] [--reps N] ...

prints the table (the report holds the same one). Each finding is one ``Claim`` in ``CLAIMS``: its id (which the
grids that test it name in their ``claims`` key, read through ``contract.grid_shows``), which cells it compares
(selected by the labels and config values of ``analysis.store``, never by position), the metric and the budget at
which it is read, the effect and the direction it needs.
docs/analysis.md ("Claims") repeats the definitions and justifies the rule; in short:

- **Scores**: a trial's return at the end of its run (``analysis.summary``, with the diverged rule of the
  settings; or at a fraction ``budget`` of its planned frames; or the area under its return curve) divided by
  its task's maximum
  (``stats.max_return``: 1000 on dm_control), so effects are in normalized score (0.1 = 100 return points on a
  DMC task); coverage is divided by the largest coverage of the grid on the task; Q-bias is used as logged.
- **Effect** of a claim: a function of the compared cells' IQMs (over seeds, and over tasks pooled when there
  are several), shown with a stratified-bootstrap CI (``stats.effect_interval``) and the probability of
  improvement of the cell the claim favours (``stats.poi_interval``). Both describe; neither decides.
- **Verdict**: a stratified permutation test (``stats.permutation_test``) of "the effect is at the threshold"
  (the data shifted to it), two-sided at 1 - confidence: *supported* when P(an effect this large | runs
  exchangeable) <= alpha / 2, *contradicted* when P(this small) <= alpha / 2, *inconclusive* otherwise. Its
  false-verdict rate under no effect is at most alpha at any number of seeds and for any distribution of
  returns (tests/analysis/test_analysis_calibration.py simulates it). When the runs allow fewer than
  2 / alpha relabellings (2 or 3 seeds per cell on one task), or the IQM ties so many of them that even
  perfectly separated runs could not reach alpha / 2 (4 seeds per cell on one task), no data could be decided:
  the row says *direction only (n seeds)*.
- **Seeds needed** (inconclusive, direction only): the seeds per cell at which a test at this level would have
  80% power at the observed effect, its standard error (from the bootstrap CI, small-sample corrected) shrinking
  as 1/sqrt(n), and never fewer than the seeds at which the test can reject at all. Not given for count
  effects (``range``), whose steps do not shrink as 1/sqrt(n).
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, cast

import numpy as np
import pandas as pd

from analysis import stats
from analysis.markdown import table
from analysis.store import AXIS_NAMES, Store, StoreError, axis_text, format_value, load_store
from analysis.summary import (
    DIVERGED_TEXT,
    Settings,
    add_settings_arguments,
    final_scores,
    normalized_finals,
    per_task_scores,
    settings_from,
)
from contract.grid_shows import grid_shows, shipped_shows
from contract.metrics import COVERAGE, EVAL_RETURN, Q_BIAS_MEAN, Q_BIAS_STD, STATE_COVERAGE
from contract.status import DIVERGED

CLOSE_TOLERANCE = 0.1  # "close to" / "within a margin": at most 0.1 normalized score below (100 return points)
RANGE_FRACTION = 0.8  # "keeps a high return" at a learning rate: IQM >= 80% of the best IQM of the comparison
POWER = 0.8  # seeds needed: the seeds per cell at which the test would reject with this probability
EARLY_BUDGET = 0.5  # exploration: coverage over the first half of the local run, before either method solves it

MANY_SEEDS = 1000  # seeds-needed figures above this are shown as "more than": the effect is noise-sized
ON_THRESHOLD = 1e-9  # |effect - threshold| at or below this is rounding: the effect sits on the threshold

KINDS = ("difference", "relative", "slope", "range", "drop")
VERDICTS = ("supported", "contradicted", "inconclusive", "direction only", "no data")
# Metrics read as logged (no task maximum, no per-grid best: a bias is a signed fraction of the return).
UNSCALED = (Q_BIAS_MEAN, Q_BIAS_STD)
METRIC_TEXT = {
    EVAL_RETURN: "return / task max",
    COVERAGE: "coverage/cells / grid max",
    STATE_COVERAGE: "coverage/state_cells (this project's proxy) / grid max",
    Q_BIAS_MEAN: "Q-bias mean",
    Q_BIAS_STD: "Q-bias std",
}


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
      best being the highest IQM of x or y at any ``axis`` value both have;
    - ``drop``: how far y falls from its own best IQM over ``axis`` at the ``high`` values of the axis (their
      mean IQM), minus the same for x: > 0 when x loses less of its best there.

    It must exceed ``threshold`` (0: x is better; -tolerance: x comes close to y). ``tune``: an axis each side
    is tuned over (its selector then matches one cell per value); the cell with the highest IQM on
    ``tune_seeds`` is compared, on the other seeds (no tune seeds: selected on the judged seeds, which the row
    says favours the tuned side). ``budget``: the fraction of the planned frames at which scores are read
    (1: the end of the run). ``area``: the area under the return curve over the run instead (the mean return,
    ``summary.area_scores``: how fast a method learns). ``absolute``: compare |score| (the size of a bias).
    """

    id: str  # what a grid's `claims` key names (sweeps/*.yaml); the grid whose cells it compares
    statement: str  # the paper's finding, in words, with what it compares and at which budget
    kind: str
    x: Mapping[str, Any]
    y: Mapping[str, Any] | None = None
    metric: str = EVAL_RETURN
    axis: str | None = None
    threshold: float = 0.0
    range_fraction: float = RANGE_FRACTION
    high: tuple[float, ...] = ()
    tune: str | None = None
    tune_seeds: tuple[int, ...] = ()
    budget: float = 1.0
    area: bool = False
    absolute: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        by_axis = self.kind in ("slope", "range", "drop")
        if by_axis != (self.axis is not None):
            raise ValueError(f"{self.id}: a {self.kind} claim {'needs' if self.axis is None else 'takes no'} axis")
        if (self.kind == "slope") != (self.y is None):
            raise ValueError(f"{self.id}: a {self.kind} claim {'takes no' if self.y is not None else 'needs'} y")
        if (self.kind == "drop") != bool(self.high):
            raise ValueError(f"{self.id}: high axis values go with a drop claim, and a drop claim needs them")
        if self.kind in ("range", "drop") and self.threshold:
            raise ValueError(f"{self.id}: a {self.kind} claim is tested against 0 only")
        if self.tune is not None and by_axis:
            raise ValueError(f"{self.id}: only difference and relative claims tune a cell over an axis")
        if self.tune_seeds and self.tune is None:
            raise ValueError(f"{self.id}: tune seeds without an axis to tune")
        if self.area and (self.metric != EVAL_RETURN or self.budget < 1.0):
            raise ValueError(f"{self.id}: an area claim reads the whole return curve (no budget, no other metric)")
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"{self.id}: budget {self.budget} is not a fraction of the run in (0, 1]")

    @property
    def grid(self) -> str | None:
        """The shipped grid (sweeps/) whose ``claims`` key names this claim; None when none does."""
        return next((name for name, shows in shipped_shows().items() if self.id in shows.claims), None)

    @property
    def x_name(self) -> str:
        return selector_text(self.x)

    @property
    def y_name(self) -> str:
        return selector_text(self.y) if self.y is not None else ""

    def score_text(self) -> str:
        if self.area:
            return "area under the return curve / (task max x frames)"
        text = METRIC_TEXT.get(self.metric, self.metric)
        text = f"|{text}|" if self.absolute else text
        return f"final {text}" if self.budget >= 1.0 else f"{text} at {self.budget:.0%} of the frames"

    def definition(self) -> str:
        """The comparison in words, as the report prints it."""
        score = self.score_text()
        axis = AXIS_NAMES.get(self.axis or "", self.axis)
        tuned = ""
        if self.tune is not None:
            tune = AXIS_NAMES.get(self.tune, self.tune)
            seeds = f"seed {', '.join(map(str, self.tune_seeds))}" if self.tune_seeds else "the judged seeds"
            tuned = f" (each at its best {tune}, chosen on {seeds})"
        if self.kind == "difference":
            text = f"IQM({self.x_name}) - IQM({self.y_name}) of {score}{tuned}"
        elif self.kind == "relative":
            text = f"IQM({self.x_name}) / IQM({self.y_name}) - 1 of {score}{tuned}"
        elif self.kind == "slope":
            text = f"least-squares slope of IQM({self.x_name}) of {score} over {axis}"
        elif self.kind == "range":
            text = (
                f"{axis} values where IQM({self.x_name}) >= {self.range_fraction:.0%} of the best IQM, minus "
                f"the same for {self.y_name} ({score})"
            )
        else:
            high = ", ".join(format_value(v) for v in self.high)
            text = (
                f"drop of {self.y_name} from its best IQM over {axis} to its mean IQM at {axis} {high}, minus "
                f"the same for {self.x_name} ({score})"
            )
        return text + f"; needs > {self.threshold:g}"


def selector_text(selector: Mapping[str, Any]) -> str:
    """``{"method": "MA-BN", "optimizer": "sgd"}`` -> ``MA-BN, SGD``, as the store labels cells."""
    return ", ".join(str(v) if k == "method" else axis_text(k, v) for k, v in selector.items())


MA_BN = {"method": "MA-BN"}
ORIGIN = {"method": "Origin"}
CRITIC_I_T = {"method": "BN (TTTTT)"}
CRITIC_I_T_ALONE = {**CRITIC_I_T, "critic_i_stats": "mode", "buffer_mix_ratio": 0.0}  # its own statistics, no mixing
SGD_TUNE_SEEDS = (1,)  # the optimizer grid's seed that picks each method's SGD learning rate (not judged)

# The table of claims (issues #10, #18; docs/analysis.md "Claims"). Cells are chosen by the store's method label
# (analysis.store.method_label: MA-BN = BatchNorm with TTETT, BN (TTTTT) = Critic-I in train mode, ...) and config
# values, so a grid's cells are found whatever their order or names in the YAML.
CLAIMS: tuple[Claim, ...] = (
    Claim(
        "eval_mode_return",
        "Critic-I in eval mode (E, MA-BN) beats train mode (T), final return",
        "difference",
        x=MA_BN,
        y=CRITIC_I_T,
    ),
    Claim(
        "train_mode_q_bias",
        "Critic-I = T has a larger Q-bias than E (MA-BN), final |Q-bias mean|",
        "difference",
        x=CRITIC_I_T,
        y=MA_BN,
        metric=Q_BIAS_MEAN,
        absolute=True,
    ),
    Claim(
        "train_mode_q_bias_noise",
        "Critic-I = T has a noisier Q-bias than E (MA-BN), final Q-bias std",
        "difference",
        x=CRITIC_I_T,
        y=MA_BN,
        metric=Q_BIAS_STD,
    ),
    Claim(
        "mixing_slope",
        "with Critic-I = T the return rises with the buffer-mixing ratio ρ",
        "slope",
        x=CRITIC_I_T,
        axis="buffer_mix_ratio",
    ),
    Claim(
        "mixing_closes_gap",
        "mixing closes the gap to MA-BN: Critic-I = T at ρ = 1 comes within 0.1 of MA-BN",
        "difference",
        x={**CRITIC_I_T, "buffer_mix_ratio": 1.0},
        y=MA_BN,
        threshold=-CLOSE_TOLERANCE,
    ),
    Claim(
        "high_lr_drop",
        "MA-BN loses less of its own best return than Origin at the highest learning rates (5e-4, 1e-3)",
        "drop",
        x=MA_BN,
        y=ORIGIN,
        axis="lr",
        high=(5e-4, 1e-3),
    ),
    Claim(
        "sgd_near_adam_baseline",
        "SGD with MA-BN comes within 0.1 of the Adam-trained baseline (Adam, Origin; the paper's Fig. 8)",
        "difference",
        x={**MA_BN, "optimizer": "sgd"},
        y={**ORIGIN, "optimizer": "adam"},
        threshold=-CLOSE_TOLERANCE,
        tune="lr",
        tune_seeds=SGD_TUNE_SEEDS,
    ),
    Claim(
        "sgd_beats_origin",
        "with SGD, MA-BN beats Origin (each at its own best SGD learning rate)",
        "difference",
        x={**MA_BN, "optimizer": "sgd"},
        y={**ORIGIN, "optimizer": "sgd"},
        tune="lr",
        tune_seeds=SGD_TUNE_SEEDS,
    ),
    Claim(
        "sgd_near_adam_ma_bn",
        "this project's stricter test: SGD with MA-BN comes within 0.1 of Adam with MA-BN",
        "difference",
        x={**MA_BN, "optimizer": "sgd"},
        y={**MA_BN, "optimizer": "adam"},
        threshold=-CLOSE_TOLERANCE,
        tune="lr",
        tune_seeds=SGD_TUNE_SEEDS,
    ),
    Claim(
        "early_state_coverage",
        "MA-BN explores more than Origin: state cells visited over the first half of the run (this project's "
        "proxy; the authors released no coverage code)",
        "relative",
        x=MA_BN,
        y=ORIGIN,
        metric=STATE_COVERAGE,
        budget=EARLY_BUDGET,
    ),
    Claim(
        "faster_learning",
        "MA-BN learns faster than Origin: area under the return curve (mean return over the run), all tasks",
        "difference",
        x=MA_BN,
        y=ORIGIN,
        area=True,
    ),
    Claim(
        "near_layer_norm",
        "MA-BN's final return is within 0.1 of LayerNorm's, all tasks",
        "difference",
        x=MA_BN,
        y={"method": "LayerNorm"},
        threshold=-CLOSE_TOLERANCE,
    ),
    # The paper's open question (issue #21): why Critic-I = T fails. Each row asks whether one change to where
    # Critic-I's batch statistics come from (method.md §3, "Statistics sources at Critic-I") recovers return
    # against TTTTT itself, without mixing; a source that does points at the cause it removes.
    Claim(
        "stopgrad_beats_train_mode",
        "open question: is it the actor's gradient through Critic-I's batch statistics? Critic-I = T with that "
        "gradient stopped beats TTTTT, final return",
        "difference",
        x={**CRITIC_I_T, "critic_i_stats": "batch_stopgrad", "buffer_mix_ratio": 0.0},
        y=CRITIC_I_T_ALONE,
    ),
    Claim(
        "replay_stats_beat_train_mode",
        "open question: is it statistics of the policy's actions? Critic-I = T normalized with the statistics of "
        "the replay pairs (s, a) beats TTTTT, final return",
        "difference",
        x={**CRITIC_I_T, "critic_i_stats": "replay_batch", "buffer_mix_ratio": 0.0},
        y=CRITIC_I_T_ALONE,
    ),
    Claim(
        "noise_alone_beats_train_mode",
        "open question: is it the mismatch rather than the noise? Critic-I on running statistics plus batch-sized "
        "noise beats TTTTT, final return",
        "difference",
        x={**CRITIC_I_T, "critic_i_stats": "running_noisy", "buffer_mix_ratio": 0.0},
        y=CRITIC_I_T_ALONE,
    ),
    # The paper's second open question (issue #21): can the target critic's statistics be aligned with its weights?
    Claim(
        "recalibrate_beats_independent",
        "open question: with Critic-III = E (where the target's running statistics enter the TD target), running "
        "statistics re-estimated at the target weights beat the released independent ones, final return",
        "difference",
        x={"method": "BN TTETE", "target_bn_stats": "recalibrate"},
        y={"method": "BN TTETE", "target_bn_stats": "independent"},
    ),
    Claim(
        "crossq_near_ma_bn",
        "open question: a CrossQ-style critic without target network (statistics shared by construction) comes "
        "within 0.1 of MA-BN with its target network, final return",
        "difference",
        x={**MA_BN, "critic_target": "none"},
        y={**MA_BN, "critic_target": "soft", "target_bn_stats": "independent"},
        threshold=-CLOSE_TOLERANCE,
    ),
    Claim(
        "batch_renorm_near_batch_norm",
        "open question: Batch Renormalization (TTETT, target network) comes within 0.1 of BatchNorm (MA-BN), "
        "final return",
        "difference",
        x={"method": "BRN TTETT", "critic_target": "soft"},
        y={**MA_BN, "critic_target": "soft", "target_bn_stats": "independent"},
        threshold=-CLOSE_TOLERANCE,
    ),
)


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    grid: str  # the grid judged: one whose `claims` key names the claim
    profile: str | None  # the orchestrator profile of the trials judged (None: the grid has one or none)
    verdict: str  # one of VERDICTS
    note: str = ""  # why there is no verdict (no data)
    detail: str = ""  # what the effect's point estimate is made of (range and drop claims, tuned cells)
    effect: stats.Interval | None = None
    poi: stats.Interval | None = None
    poi_text: str = ""  # P(what > what)
    test: stats.PermutationTest | None = None  # the verdict's test, on the data shifted to the threshold
    seeds: int = 0  # the fewest seeds of a compared cell on a task
    seeds_needed: int | None = None
    runs: int = 0  # trials behind the effect
    diverged: int = 0  # ... of which diverged
    cells: tuple[str, ...] = field(default_factory=tuple)  # the store's labels of the compared cells

    @property
    def grid_label(self) -> str:
        return self.grid + (f" ({self.profile})" if self.profile else "")

    def verdict_text(self) -> str:
        if self.verdict == "no data":
            return f"no data: {self.note}"
        test = self.test
        if self.verdict in ("supported", "contradicted") and test is not None:
            p = test.p_above if self.verdict == "supported" else test.p_below
            return f"{self.verdict} at {self.seeds} seeds (one-sided permutation p = {float(p):.2g})"
        if self.seeds_needed is None:
            needed = "no number of seeds given: " + (
                "a count effect does not shrink as 1/sqrt(n)"
                if self.claim.kind == "range"
                else "the effect sits on the threshold"
            )
        elif self.seeds_needed > MANY_SEEDS:
            needed = f"more than {MANY_SEEDS} seeds per cell needed at this spread: the effect is tiny next to it"
        else:
            needed = f"≈ {self.seeds_needed} seeds per cell needed at this spread"
        if self.verdict == "direction only":
            side = "above" if self.effect is not None and self.effect.point > self.claim.threshold else "not above"
            seeds = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
            return (
                f"direction only ({seeds}): {side} the threshold; too few runs for any test at this level to "
                f"decide ({needed})"
            )
        if test is not None:  # the smaller one-sided p: how far from a verdict either way
            needed = f"one-sided permutation p = {min(float(test.p_above), float(test.p_below)):.2g}; {needed}"
        return f"inconclusive at {self.seeds} seeds ({needed})"


def decide(
    p_above: np.ndarray | float, p_below: np.ndarray | float, arrangements: int, confidence: float
) -> np.ndarray:
    """The verdicts of permutation tests (elementwise over arrays of p-values), by the module docstring's rule."""
    alpha = 1.0 - confidence
    p_above, p_below = np.asarray(p_above), np.asarray(p_below)
    if arrangements * alpha / 2.0 < 1.0:  # the smallest p the data allow, 1 / arrangements, is above alpha / 2
        return np.full(p_above.shape, "direction only", dtype=object)
    out = np.full(p_above.shape, "inconclusive", dtype=object)
    out[p_below <= alpha / 2.0] = "contradicted"
    out[p_above <= alpha / 2.0] = "supported"
    return out


def verdict_of(test: stats.PermutationTest, confidence: float) -> str:
    """The verdict of one claim's permutation test."""
    return str(decide(test.p_above, test.p_below, test.arrangements, confidence).item())


def fewest_decidable_seeds(
    strata: Sequence[int], confidence: float, can_decide: Callable[[int], bool] | None = None
) -> int:
    """Seeds per cell at which a permutation test can reject at all (2 / alpha arrangements).

    ``strata``: per stratum (a block of the test on a task), the number of groups its runs are dealt into.
    ``can_decide(n)``, when given, must also hold: the statistic may tie relabellings (the IQM of 4 runs keeps
    the middle two, so at 4 against 4 the extreme relabelling has company and p stays above 2.5%).
    """
    alpha = 1.0 - confidence
    for n in range(1, MANY_SEEDS + 1):
        if stats.arrangements([[n] * groups for groups in strata]) * alpha / 2.0 >= 1.0:
            if can_decide is None or can_decide(n):
                return n
    return MANY_SEEDS + 1


def _separated_decides(effect: Callable[[list[np.ndarray]], np.ndarray], tasks: int, settings: Settings) -> Callable:
    """``can_decide`` of a two-cell claim: would runs of x all above all of y's reach p <= alpha / 2?"""

    def can_decide(n: int) -> bool:
        x, y = [np.arange(n) + 2.0 * n + 1.0] * tasks, [np.arange(n) + 1.0] * tasks
        test = stats.permutation_test([x, y], effect, [[0, 1]], stats.iqm, settings.reps, settings.seed)
        return float(test.p_above) <= (1.0 - settings.confidence) / 2.0

    return can_decide


def seeds_needed(
    distance: float, spread: float, seeds: int, fewest: int, confidence: float, power: float = POWER
) -> int | None:
    """Seeds per cell at which an effect ``distance`` from the threshold is found with probability ``power``.

    The effect's standard error (``spread`` at ``seeds`` per cell) shrinks as 1/sqrt(n); a test at level
    1 - confidence then finds it when distance >= (z_(1 - alpha/2) + z_power) x spread. At least one seed more
    than now, and at least ``fewest`` (below it no test at this level can reject).
    """
    distance = abs(distance)
    if distance <= ON_THRESHOLD or not math.isfinite(distance) or not math.isfinite(spread):
        return None
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0) + NormalDist().inv_cdf(power)
    return max(seeds + 1, fewest, math.ceil(seeds * (z * spread / distance) ** 2))


def _spread(effect: stats.Interval, test: stats.PermutationTest, seeds: int, settings: Settings) -> float:
    """The effect's standard error at ``seeds`` per cell, for planning.

    From the bootstrap CI (half-width / z), widened by sqrt(n / (n - 1)): a bootstrap of n runs has the plug-in
    variance, (n - 1) / n of the sample variance. With one seed the bootstrap shows no spread; then the spread
    over relabellings stands in, which also holds the effect itself and so overstates the seeds needed.
    """
    half_width = (effect.high - effect.low) / 2.0
    if seeds < 2 or half_width <= 0:
        return float(test.null_sd)
    z = NormalDist().inv_cdf(1.0 - (1.0 - settings.confidence) / 2.0)
    return half_width / z * math.sqrt(seeds / (seeds - 1))


# ------------------------------------------------------------------ scores
def claim_scores(store: Store, claim: Claim, settings: Settings) -> pd.DataFrame:
    """Values of the claim's metric per trial of one grid (at its budget), with ``score`` as the claim reads it."""
    if claim.metric == EVAL_RETURN:
        return normalized_finals(store, settings, claim.budget, claim.area)
    finals = final_scores(store, claim.metric, settings.final_window, settings.diverged, claim.budget)
    if finals.empty:
        return finals.assign(score=pd.Series(dtype=float))
    if claim.metric in UNSCALED:
        score = finals["value"].astype(float)
        finals = finals.assign(score=score.abs() if claim.absolute else score)
    else:
        # No metric but the return has a known maximum: divide by the grid's largest value on the task, so
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


def _drop(k: int, high: Sequence[int]) -> Callable[[list[np.ndarray]], np.ndarray]:
    """Effect of a drop claim on the 2k IQMs (x at the k axis values, then y): y's drop minus x's."""

    def effect(values: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(values)
        drops = [part.max(axis=0) - part[list(high)].mean(axis=0) for part in (stacked[:k], stacked[k:])]
        return drops[1] - drops[0]

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
    blocks: list[list[int]]  # groups exchangeable under the null hypothesis (stats.permutation_test)
    at_threshold: list[list[np.ndarray]]  # the groups shifted so that the threshold is the null value
    poi_x: list[np.ndarray]
    poi_y: list[np.ndarray]
    poi_text: str
    cells: list[str]
    tasks: list[str]
    judged: pd.DataFrame  # the score rows the effect is computed on (tune seeds left out)
    detail: str = ""


def evaluate(
    claim: Claim, grid: str, scores: pd.DataFrame, settings: Settings, profile: str | None = None
) -> ClaimResult:
    """Judge ``claim`` on ``scores`` (``claim_scores`` of ``grid``, one profile)."""
    try:
        comparison = _comparison(claim, scores)
    except _NoVerdict as why:
        note = str(why)
        if note.startswith("no finished trial") and claim.metric != EVAL_RETURN:
            note += f" with {claim.metric} logged"  # e.g. a store written before the metric existed
        return ClaimResult(claim, grid, profile, "no data", note=note)
    effect = stats.effect_interval(
        comparison.groups, comparison.effect, stats.iqm, settings.reps, settings.confidence, settings.seed
    )
    if not math.isfinite(effect.point):
        return ClaimResult(
            claim,
            grid,
            profile,
            "no data",
            note="the effect is not finite (a zero IQM to divide by)",
            cells=tuple(comparison.cells),
        )
    poi = stats.poi_interval(comparison.poi_x, comparison.poi_y, settings.reps, settings.confidence, settings.seed)
    test = stats.permutation_test(
        comparison.at_threshold, comparison.effect, comparison.blocks, stats.iqm, settings.reps, settings.seed
    )
    used = comparison.judged
    used = used[used["cell"].isin(comparison.cells) & used["task"].isin(comparison.tasks)]
    seeds = int(used.groupby(["cell", "task"]).size().min())
    verdict = verdict_of(test, settings.confidence)
    needed = None
    if verdict in ("inconclusive", "direction only"):
        strata = [len(block) for block in comparison.blocks for _ in comparison.tasks]
        two_cells = claim.kind in ("difference", "relative")
        check = _separated_decides(comparison.effect, len(comparison.tasks), settings) if two_cells else None
        fewest = fewest_decidable_seeds(strata, settings.confidence, check)
        if seeds < fewest:  # enough relabellings, but the IQM ties them (4 seeds): no data could be decided
            verdict = "direction only"
        if claim.kind != "range":  # a count effect does not shrink as 1/sqrt(n)
            needed = seeds_needed(
                float(test.observed), _spread(effect, test, seeds, settings), seeds, fewest, settings.confidence
            )
    return ClaimResult(
        claim,
        grid,
        profile,
        verdict,
        detail=comparison.detail,
        effect=effect,
        poi=poi,
        poi_text=comparison.poi_text,
        test=test,
        seeds=seeds,
        seeds_needed=needed,
        runs=len(used),
        diverged=int((used["status"] == DIVERGED).sum()),
        cells=tuple(comparison.cells),
    )


def _tuned_cell(scores: pd.DataFrame, claim: Claim, selector: Mapping[str, Any], what: str) -> tuple[str, str]:
    """(the compared cell of ``selector``, how it was chosen): its one cell, or its best over ``claim.tune``."""
    rows = select(scores, selector)
    if claim.tune is None or claim.tune not in rows or rows[claim.tune].nunique() <= 1:
        return _one_cell(rows, what), ""
    by_level = _cells_by_level(rows, claim.tune, what)
    chosen_on = rows[rows["seed"].isin(claim.tune_seeds)] if claim.tune_seeds else rows
    iqms = {
        cell: float(stats.iqm(chosen_on.loc[chosen_on["cell"] == cell, "score"].to_numpy(dtype=float)))
        for cell in by_level.values()
        if (chosen_on["cell"] == cell).any()
    }
    if not iqms:
        seeds = ", ".join(map(str, claim.tune_seeds))
        raise _NoVerdict(f"{what}: no finished trial on the tune seed(s) {seeds} to choose its {claim.tune} by")
    best = max(iqms, key=lambda cell: iqms[cell])
    on = f"seed {', '.join(map(str, claim.tune_seeds))}" if claim.tune_seeds else "the judged seeds (optimistic)"
    return best, f"{best}: best of {len(iqms)} on {on}"


def _comparison(claim: Claim, scores: pd.DataFrame) -> _Comparison:
    """The cells, groups and effect of ``claim`` on ``scores``; raises _NoVerdict when the store can't tell."""
    if claim.kind in ("difference", "relative"):
        x_cell, x_how = _tuned_cell(scores, claim, claim.x, claim.x_name)
        y_cell, y_how = _tuned_cell(scores, claim, claim.y or {}, claim.y_name)
        judged = scores[~scores["seed"].isin(claim.tune_seeds)] if claim.tune_seeds else scores
        tasks = _shared_tasks(judged, [x_cell, y_cell])
        x, y = per_task_scores(judged, x_cell, tasks), per_task_scores(judged, y_cell, tasks)
        effect: Callable[[list[np.ndarray]], np.ndarray]
        if claim.kind == "difference":
            shifted = [t - claim.threshold for t in x]  # IQM(x - c) = IQM(x) - c
            effect = _difference
        else:
            shifted = [t / (1.0 + claim.threshold) for t in x]  # IQM(x / c) = IQM(x) / c
            effect = _relative
        detail = "; ".join(how for how in (x_how, y_how) if how)
        return _Comparison(
            [x, y],
            effect,
            [[0, 1]],
            [shifted, y],
            x,
            y,
            f"P({x_cell} > {y_cell})",
            [x_cell, y_cell],
            tasks,
            judged,
            detail,
        )
    x_rows = select(scores, claim.x)
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
        axis_values = np.array(list(by_level), dtype=np.float64)
        # slope of (IQM_i - c level_i) = slope - c: the threshold becomes the null value 0
        at_threshold = [
            [t - claim.threshold * float(level) for t in group]
            for group, level in zip(groups, axis_values, strict=True)
        ]
        # PoI between the ends of the sweep: the chance that a run at the largest ρ beats one at the smallest.
        return _Comparison(
            groups,
            _slope(axis_values),
            [list(range(len(cells)))],  # no effect of ρ: every run could have come from any ρ
            at_threshold,
            groups[-1],
            groups[0],
            f"P({cells[-1]} > {cells[0]})",
            cells,
            tasks,
            scores,
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
    iqms = [np.asarray(stats.iqm(g)) for g in groups]
    if claim.kind == "range":
        good_x, good_y = _good_counts(iqms, k, claim.range_fraction)
        effect = _range(k, claim.range_fraction)
        detail = f"{claim.x_name} {int(good_x)} of {k}, {claim.y_name} {int(good_y)} of {k}"
    else:
        high = [i for i, level in enumerate(levels) if any(math.isclose(level, h, rel_tol=1e-9) for h in claim.high)]
        if len(high) != len(claim.high):
            shown = ", ".join(format_value(v) for v in claim.high)
            raise _NoVerdict(f"{claim.x_name} and {claim.y_name} lack finished trials at {axis_name} {shown}")
        effect = _drop(k, high)
        drops = [float(np.max(part) - np.mean([part[i] for i in high])) for part in (iqms[:k], iqms[k:])]
        detail = f"drop {claim.x_name} {drops[0]:.3f}, {claim.y_name} {drops[1]:.3f}"
    # PoI over the (task, axis value) strata: the chance that x beats y at a value of the sweep.
    return _Comparison(
        groups,
        effect,
        [[i, k + i] for i in range(k)],  # no difference of methods: relabel x and y at each axis value
        groups,
        [t for g in groups[:k] for t in g],
        [t for g in groups[k:] for t in g],
        f"P({claim.x_name} > {claim.y_name}), mean over {axis_name}",
        cells,
        tasks,
        scores,
        detail,
    )


def claim_grids(store: Store) -> dict[str, list[str]]:
    """Claim id -> the grids whose ``claims`` key names it: the shipped grids, then the store's other grids (by the
    grid text their runs recorded)."""
    shows = dict(shipped_shows())
    for name in store.grids:
        shows.setdefault(name, grid_shows(store.root, name))
    grids: dict[str, list[str]] = {}
    for name, declared in shows.items():
        for claim_id in declared.claims:
            grids.setdefault(claim_id, []).append(name)
    return grids


def evaluate_claims(store: Store, settings: Settings, claims: Sequence[Claim] = CLAIMS) -> list[ClaimResult]:
    """Every claim judged on each grid that names it, per orchestrator profile when the grid holds several."""
    out = []
    scores_by: dict[tuple[str, str, float, bool, bool], pd.DataFrame] = {}
    grids_of = claim_grids(store)
    for claim, grid in ((c, g) for c in claims for g in grids_of.get(c.id, ())):
        if grid not in store.grids:
            out.append(ClaimResult(claim, grid, None, "no data", note=f"grid {grid} not in the store"))
            continue
        key = (grid, claim.metric, claim.budget, claim.area, claim.absolute)
        if key not in scores_by:
            scores_by[key] = claim_scores(store.grid(grid), claim, settings)
        scores = scores_by[key]
        profiles = sorted({str(p) for p in store.grid(grid).trials["profile"] if isinstance(p, str)})
        if len(profiles) <= 1:  # one profile (or none recorded): judge the grid as a whole
            out.append(evaluate(claim, grid, scores, settings))
            continue
        for profile in profiles:  # a local and a paper run of one grid are separate evidence
            mine = scores[scores["profile"] == profile] if len(scores) else scores
            out.append(evaluate(claim, grid, mine, settings, profile))
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


def claims_lines(store: Store, settings: Settings) -> list[str]:
    """The claims section: every claim of ``analysis.claims.CLAIMS`` judged on the grids that name it, and the
    rules."""
    pct = f"{settings.confidence:.0%}"
    lines = [
        "## Claims of the paper",
        "",
        "Each finding of the paper that a grid tests, as a comparison of its cells (definitions as data in "
        '`analysis/claims.py`, explained in docs/analysis.md, "Claims"). Scores are final returns divided '
        "by the task maximum (0.1 = 100 return points on a DMC task) unless the comparison says otherwise; "
        f"CI: {pct} stratified bootstrap ({settings.reps} resamples, seed {settings.seed}; every cell "
        "resampled on its own within each task); probability of improvement: over pairs of runs per task, "
        "ties counting 1/2.",
        "",
    ]
    lines += table(header(settings.confidence), table_rows(evaluate_claims(store, settings)))
    lines += [
        "",
        f"**Verdict**: a stratified permutation test ({settings.reps} relabellings, seed {settings.seed}) of the "
        f'effect against the claim\'s threshold (0, or -{CLOSE_TOLERANCE:g} for "within"), two-sided at '
        f"{1 - settings.confidence:.0%}: *supported* when an effect this far above the threshold has probability "
        f"<= {(1 - settings.confidence) / 2:.1%} if the compared runs were exchangeable, *contradicted* when one "
        "this far below has, *inconclusive* otherwise. Its false-verdict rate under no effect is at most "
        f"{1 - settings.confidence:.0%} at any number of seeds; where the runs allow too few relabellings for "
        "any test at that level to reject (2 to 4 seeds per cell on one task, the IQM of 4 tying relabellings), the "
        "row says *direction only*. "
        "The CI and the probability of improvement describe the effect; they do not decide. "
        f"**Seeds needed** (no verdict): the seeds per cell at which a test at this level would find the observed "
        f"effect with {POWER:.0%} probability (its standard error, from the CI, shrinking as 1/sqrt(n)), never "
        "fewer than the seeds at which the test can reject at all; an estimate from few seeds, not a promise. "
        f"**Diverged trials** score {DIVERGED_TEXT[settings.diverged]} (`--diverged {settings.diverged}`).",
        "",
    ]
    return lines


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Print the claims table of a result store (as in report.md)."
    )
    parser.add_argument("--results", default="results", help="result store root (default: results)")
    add_settings_arguments(parser)
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m analysis.claims") -> int:
    """``prog``: the program name in usage and error lines (``bnsweep claims`` through the bnsweep command)."""
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
