"""Statistics of method.md §8, matching rliable's definitions (Agarwal et al., NeurIPS 2021).

rliable itself is not a dependency: rliable 1.2.0 accepts ``arch`` < 8, but ``arch`` 7.2 fails under pandas 3
and ``arch`` 8 removed the ``random_state`` argument rliable passes (docs/analysis.md).
What is reproduced here, and tested against hand-computed values:

- ``iqm``: the interquartile mean, ``scipy.stats.trim_mean(scores, 0.25)`` (the same cut, in numpy) over all
  runs of all tasks pooled (rliable's ``aggregate_iqm``); ``mean``/``median``: the mean/median over tasks of the
  per-task mean over runs (rliable's ``aggregate_mean``/``aggregate_median``); ``optimality_gap``:
  ``1 - mean(min(scores, 1))``.
- ``interval``: the point estimate on the data and a percentile confidence interval from a *stratified*
  bootstrap, i.e. runs are resampled with replacement independently within each task (arch's
  ``StratifiedBootstrap`` as rliable uses it). Tasks may have different numbers of runs.
- ``probability_of_improvement``: per task P(X > Y) + 0.5 P(X = Y) over all pairs of runs (the Mann-Whitney U
  statistic divided by n_x n_y), averaged over tasks; ``poi_interval`` bootstraps X and Y independently
  within each task.
- ``effect_interval``: any elementwise function of several groups' statistics (a difference of IQMs, a slope
  over ρ, ...) with the same stratified bootstrap, each group resampled on its own (the claims table).
- ``permutation_test``: the claims table's verdicts. The null hypothesis is that the compared groups' runs are
  exchangeable (drawn from one distribution) within each task and block; under it every relabelling of the runs
  is equally likely, so the p-value of the observed effect among relabelled ones has its nominal level at any
  number of runs and for any distribution of returns (skewed, bimodal), which a percentile bootstrap at 2-3 runs
  does not (docs/analysis.md, "Why a permutation test").

Randomness: every call builds its own ``numpy.random.default_rng(seed)``, so a number never depends on what
was computed before it, and the same store gives the same figures and report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

DEFAULT_REPS = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0
DMC_MAX_RETURN = 1000.0  # dm_control rewards are in [0, 1] per step over 1000 steps

# One task's run scores: numbers or a 1-D array.
Runs: TypeAlias = Sequence[float] | np.ndarray
# Run scores per task: one Runs per task (a 2-D array: one row per task); a single Runs is one task.
PerTask: TypeAlias = Sequence[Runs] | Runs
# A statistic maps per-task score arrays of shape (..., n_runs_task) to an array of shape (...).
Statistic = Callable[[Sequence[np.ndarray]], np.ndarray]


def _pooled(per_task: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(t, dtype=np.float64) for t in per_task], axis=-1)


def _task_means(per_task: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(t, dtype=np.float64).mean(axis=-1) for t in per_task], axis=-1)


def iqm(per_task: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Interquartile mean of all runs of all tasks pooled (25% trimmed from each end, as scipy trims).

    ``per_task``: a 1-D array (one task's runs) or one array per task (a 2-D array: one row per task).
    """
    scores = _pooled(_as_tasks(per_task))
    # scipy.stats.trim_mean(scores, 0.25) exactly (int(0.25 n) cut from each end), without its per-call overhead,
    # which dominates when thousands of small bootstrap batches are trimmed.
    n = scores.shape[-1]
    cut = int(0.25 * n)
    return np.sort(scores, axis=-1)[..., cut : n - cut].mean(axis=-1)


def mean(per_task: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over tasks of the mean over runs."""
    return _task_means(per_task).mean(axis=-1)


def median(per_task: Sequence[np.ndarray]) -> np.ndarray:
    """Median over tasks of the mean over runs (rliable's aggregate median)."""
    return np.median(_task_means(per_task), axis=-1)


def optimality_gap(per_task: Sequence[np.ndarray], gamma: float = 1.0) -> np.ndarray:
    """How far normalized scores fall short of ``gamma``; scores above it earn nothing extra."""
    return gamma - np.minimum(_pooled(per_task), gamma).mean(axis=-1)


AGGREGATES: dict[str, Statistic] = {"Median": median, "IQM": iqm, "Mean": mean, "Optimality gap": optimality_gap}


@dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float
    n_runs: int  # scores behind the estimate (all tasks)
    n_tasks: int

    @property
    def degenerate(self) -> bool:
        """True when no task has two runs: a bootstrap cannot show any spread, the CI is a point."""
        return self.n_runs <= self.n_tasks

    def __str__(self) -> str:
        return f"{self.point:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _as_tasks(per_task: PerTask) -> list:
    """A flat sequence of numbers is one task's runs; a sequence of sequences is one entry per task."""
    if isinstance(per_task, np.ndarray) and per_task.dtype != object:
        return [per_task] if per_task.ndim <= 1 else list(per_task)
    if all(np.ndim(t) == 0 for t in per_task):
        return [np.asarray(per_task, dtype=np.float64)]
    return list(per_task)


def _clean(per_task: PerTask) -> list[np.ndarray]:
    tasks = [np.asarray(t, dtype=np.float64).ravel() for t in _as_tasks(per_task)]
    tasks = [t[np.isfinite(t)] for t in tasks]
    return [t for t in tasks if t.size]


def _resample(per_task: list[np.ndarray], reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    # Stratified: each task's runs are drawn with replacement from that task only.
    return [t[rng.integers(0, t.size, size=(reps, t.size))] for t in per_task]


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def interval(
    per_task: PerTask,
    statistic: Statistic = iqm,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Point estimate and stratified-bootstrap percentile CI of ``statistic``.

    ``per_task``: one array of run scores per task (a single 1-D array means one task). Non-finite scores
    are dropped. Raises ValueError when no score is left.
    """
    tasks = _clean(per_task)
    if not tasks:
        raise ValueError("no finite scores to aggregate")
    point = float(statistic(tasks))
    n_runs = sum(t.size for t in tasks)
    if n_runs == len(tasks):  # one run per task: every resample is the data itself
        return Interval(point, point, point, n_runs, len(tasks))
    samples = statistic(_resample(tasks, reps, np.random.default_rng(seed)))
    low, high = _percentiles(samples, confidence)
    return Interval(point, low, high, n_runs, len(tasks))


def effect_interval(
    groups: Sequence[PerTask],
    effect: Callable[[list[np.ndarray]], np.ndarray],
    statistic: Statistic = iqm,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """``effect([statistic(group) for group in groups])`` with a stratified-bootstrap percentile CI.

    Each group (one cell: one array of run scores per task) is resampled independently, and within each of
    its tasks, as ``interval`` resamples one group: the groups are different runs, so nothing pairs them.
    ``effect`` maps the groups' statistics (arrays of one shape: scalars for the point, one value per resample
    for the CI) to an array of that shape, elementwise, e.g. ``lambda v: v[0] - v[1]`` for a difference.
    ``n_runs`` is the smallest group's run count. Raises ValueError when a group has no finite score.
    """
    cleaned = [_clean(group) for group in groups]
    if not cleaned or any(not tasks for tasks in cleaned):
        raise ValueError("every group needs at least one finite score")
    point = float(effect([np.asarray(statistic(tasks), dtype=np.float64) for tasks in cleaned]))
    n_runs = min(sum(t.size for t in tasks) for tasks in cleaned)
    n_tasks = max(len(tasks) for tasks in cleaned)
    if all(t.size == 1 for tasks in cleaned for t in tasks):  # nothing to resample: the CI is the point
        return Interval(point, point, point, n_runs, n_tasks)
    rng = np.random.default_rng(seed)
    samples = effect([np.asarray(statistic(_resample(tasks, reps, rng)), dtype=np.float64) for tasks in cleaned])
    low, high = _percentiles(np.asarray(samples, dtype=np.float64), confidence)
    return Interval(point, low, high, n_runs, n_tasks)


def _poi(x_tasks: Sequence[np.ndarray], y_tasks: Sequence[np.ndarray]) -> np.ndarray:
    per_task = []
    for x, y in zip(x_tasks, y_tasks, strict=True):
        diff = x[..., :, None] - y[..., None, :]
        per_task.append(((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1)))
    return np.mean(per_task, axis=0)


def probability_of_improvement(x_per_task: PerTask, y_per_task: PerTask) -> float:
    """P(X > Y): per task the chance that a run of X beats a run of Y (ties count 1/2), averaged over tasks."""
    x_tasks, y_tasks = _paired(x_per_task, y_per_task)
    return float(_poi(x_tasks, y_tasks))


def _paired(x_per_task: PerTask, y_per_task: PerTask) -> tuple[list[np.ndarray], list[np.ndarray]]:
    x_tasks, y_tasks = _as_tasks(x_per_task), _as_tasks(y_per_task)
    if len(x_tasks) != len(y_tasks):
        raise ValueError(f"X has {len(x_tasks)} tasks, Y has {len(y_tasks)}: compare on the same tasks")
    pairs = [
        (np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel())
        for x, y in zip(x_tasks, y_tasks, strict=True)
    ]
    pairs = [(x[np.isfinite(x)], y[np.isfinite(y)]) for x, y in pairs]
    pairs = [(x, y) for x, y in pairs if x.size and y.size]
    if not pairs:
        raise ValueError("no task has scores for both X and Y")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def poi_interval(
    x_per_task: PerTask,
    y_per_task: PerTask,
    reps: int = DEFAULT_REPS,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Probability of improvement with a CI from resampling X and Y independently within each task."""
    x_tasks, y_tasks = _paired(x_per_task, y_per_task)
    point = float(_poi(x_tasks, y_tasks))
    n_runs = min(sum(x.size for x in x_tasks), sum(y.size for y in y_tasks))
    if all(x.size == 1 and y.size == 1 for x, y in zip(x_tasks, y_tasks, strict=True)):
        return Interval(point, point, point, n_runs, len(x_tasks))
    rng = np.random.default_rng(seed)
    samples = _poi(_resample(x_tasks, reps, rng), _resample(y_tasks, reps, rng))
    low, high = _percentiles(samples, confidence)
    return Interval(point, low, high, n_runs, len(x_tasks))


# ------------------------------------------------------------------ normalization
def is_dmc_task(task: str) -> bool:
    """dm_control names are domain_task in lower case; Gymnasium ids look like Hopper-v5."""
    return task == task.lower() and "-v" not in task


def max_return(task: str, observed_best: float | None = None) -> float:
    """The return that normalizes ``task`` to 1.

    dm_control: 1000 (method.md §8). Gymnasium MuJoCo has no maximum; this project's choice is the best final
    return any trial of the store reached on that task (``observed_best``), so normalized scores stay in
    [.., 1] and the choice is stated in the report.
    """
    if is_dmc_task(task):
        return DMC_MAX_RETURN
    if observed_best is None or not np.isfinite(observed_best) or observed_best <= 0:
        raise ValueError(f"{task}: no maximum return known and no positive observed best to normalize by")
    return float(observed_best)


def normalize(values: np.ndarray | Sequence[float], task: str, observed_best: float | None = None) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) / max_return(task, observed_best)


# ------------------------------------------------------------------ permutation test
@dataclass(frozen=True)
class PermutationTest:
    """A stratified permutation test of an effect; arrays when the groups carry leading batch dimensions.

    ``p_above``: the chance, under exchangeability, of an effect at least as large as the observed one (small:
    the data say the effect is above the null value); ``p_below``: at least as small. Each is a Monte-Carlo
    p-value with the observed labelling counted among the permutations, (1 + hits) / (1 + reps), which keeps
    its level exactly whatever ``reps`` is. ``arrangements``: the distinct relabellings the data allow; no
    p-value can fall below 1 / arrangements, so with fewer than 2 / alpha of them no two-sided test at level
    alpha can reject (2 against 2 runs on one task: 6).
    """

    observed: np.ndarray | float
    p_above: np.ndarray | float
    p_below: np.ndarray | float
    null_sd: np.ndarray | float  # the effect's spread over relabellings (a planning figure for seeds needed)
    arrangements: int


def arrangements(block_sizes: Sequence[Sequence[int]]) -> int:
    """Distinct relabellings: per stratum (one block on one task) the multinomial (N; n_1, ..., n_k)."""
    total = 1
    for sizes in block_sizes:
        count, left = 1, sum(sizes)
        for size in sizes:
            count *= math.comb(left, size)
            left -= size
        total *= count
    return total


def permutation_test(
    groups: Sequence[Sequence[np.ndarray]],
    effect: Callable[[list[np.ndarray]], np.ndarray],
    blocks: Sequence[Sequence[int]],
    statistic: Statistic = iqm,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
) -> PermutationTest:
    """``effect([statistic(group) for group in groups])`` against its distribution over relabellings.

    ``groups``: per compared cell, one array of run scores per task (the same tasks, in the same order, for
    every cell; arrays may have leading batch dimensions, the runs being the last axis, to test many data sets
    at once). ``blocks``: lists of group indices whose runs are exchangeable under the null hypothesis; within
    each block and each task the runs are pooled and dealt back at random, each group keeping its number of
    runs (e.g. ``[[0, 1]]`` for a difference of two cells; ``[[0, 2], [1, 3]]`` for two methods compared at two
    learning rates, relabelled within each learning rate). A group in no block is never relabelled.
    Shifting the data to a threshold before the test (``x - margin``) tests "effect > threshold".
    """
    n_tasks = len(groups[0])
    if any(len(group) != n_tasks for group in groups):
        raise ValueError("every group needs one score array per task, the same tasks for all")
    data = [[np.asarray(scores, dtype=np.float64) for scores in group] for group in groups]
    observed = np.asarray(effect([np.asarray(statistic(group)) for group in data]), dtype=np.float64)
    rng = np.random.default_rng(seed)
    # every group's per-task runs under each relabelling: shape (reps, *batch, runs)
    relabelled: list[list[np.ndarray]] = [[np.broadcast_to(s, (reps, *s.shape)) for s in group] for group in data]
    strata = []
    for block in blocks:
        for task in range(n_tasks):
            parts = [data[g][task] for g in block]
            sizes = [part.shape[-1] for part in parts]
            strata.append(sizes)
            pooled = np.concatenate(parts, axis=-1)
            order = rng.permuted(np.tile(np.arange(pooled.shape[-1]), (reps, 1)), axis=1)
            dealt = np.moveaxis(np.take(pooled, order, axis=-1), -2, 0)  # (reps, *batch, runs)
            start = 0
            for g, size in zip(block, sizes, strict=True):
                relabelled[g][task] = dealt[..., start : start + size]
                start += size
    null = np.asarray(effect([np.asarray(statistic(group)) for group in relabelled]), dtype=np.float64)
    # ties count as hits (a conservative p); the tolerance absorbs rounding of equal effects
    tolerance = 1e-12 * np.maximum(1.0, np.abs(observed))
    with np.errstate(invalid="ignore"):
        p_above = (1 + (null >= observed - tolerance).sum(axis=0)) / (reps + 1)
        p_below = (1 + (null <= observed + tolerance).sum(axis=0)) / (reps + 1)
        null_sd = np.nanstd(np.where(np.isfinite(null), null, np.nan), axis=0)
    scalar = observed.ndim == 0
    return PermutationTest(
        float(observed) if scalar else observed,
        float(p_above) if scalar else p_above,
        float(p_below) if scalar else p_below,
        float(null_sd) if scalar else null_sd,
        arrangements(strata),
    )
