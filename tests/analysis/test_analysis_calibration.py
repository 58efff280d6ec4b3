"""The claims table's verdict rule under no true effect: at most 5% false verdicts at 2, 3, 5 and 10 seeds.

Null data sets (two cells drawn from one distribution: normal, skewed, and bimodal as RL returns are when some
seeds fail) go through the code ``analysis.claims.evaluate`` uses, ``stats.permutation_test`` then
``claims.decide``, many data sets at once. Every rate is checked against 5% with a one-sided binomial test at
the 0.1% level (a rule that really gave 6.5% would fail it at 4000 data sets), and the same simulation shows it
would catch a miscalibrated rule: the percentile bootstrap the table used before settles far more than 5% at 2
and 3 seeds (issue #18). docs/analysis.md ("Why a permutation test") gives the rates this test measures.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from analysis import stats
from analysis.claims import decide

DATA_SETS = 4000  # per case: a binomial bound at 5% is then +-0.7 percentage points (one standard error: 0.34)
RELABELLINGS = 400  # per test; the p-value (1 + hits) / (1 + reps) keeps its level at any count
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
CHUNK = 500  # data sets per call: (chunk, relabellings, runs) floats stay small


def _draws(kind: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normalized final scores with no difference between cells."""
    if kind == "normal":
        return rng.normal(0.5, 0.15, shape)
    if kind == "skewed":  # a long right tail: most seeds middling, a few far better
        return 0.2 + 0.1 * rng.lognormal(0.0, 1.0, shape)
    failed = rng.random(shape) < 0.3  # bimodal: 30% of seeds fail to learn
    return np.where(failed, rng.normal(0.05, 0.02, shape), rng.normal(0.8, 0.05, shape))


def _difference(values: list[np.ndarray]) -> np.ndarray:
    return values[0] - values[1]


def _verdicts(x: np.ndarray, y: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Verdicts of IQM(x) - IQM(y) > threshold; x, y: (data sets, tasks, seeds)."""
    out = []
    for start in range(0, len(x), CHUNK):
        xs, ys = x[start : start + CHUNK], y[start : start + CHUNK]
        groups = [[xs[:, t] - threshold for t in range(xs.shape[1])], [ys[:, t] for t in range(ys.shape[1])]]
        test = stats.permutation_test(groups, _difference, [[0, 1]], stats.iqm, RELABELLINGS, seed=start)
        out.append(decide(test.p_above, test.p_below, test.arrangements, CONFIDENCE))
    return np.concatenate(out)


def false_verdict_rate(kind: str, seeds: int, tasks: int = 1, threshold: float = 0.0, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    x = _draws(kind, rng, (DATA_SETS, tasks, seeds)) + threshold  # the true effect sits on the threshold
    y = _draws(kind, rng, (DATA_SETS, tasks, seeds))
    verdicts = _verdicts(x, y, threshold)
    return float(np.isin(verdicts, ("supported", "contradicted")).mean())


def _consistent_with_alpha(rate: float) -> bool:
    """Not significantly above ALPHA: P(at least this many false verdicts | rate ALPHA) > 0.1%."""
    return binom.sf(round(rate * DATA_SETS) - 1, DATA_SETS, ALPHA) > 1e-3


@pytest.mark.parametrize("kind", ["normal", "skewed", "bimodal"])
@pytest.mark.parametrize("seeds", [2, 3, 5, 10])
def test_false_verdicts_at_most_alpha_under_no_effect(kind, seeds):
    rate = false_verdict_rate(kind, seeds)
    assert _consistent_with_alpha(rate), f"{kind}, {seeds} seeds: {rate:.2%} false verdicts"
    if seeds <= 3:  # 6 or 20 relabellings on one task: p >= 1/20, no test at 5% can reject
        assert rate == 0.0


def test_pooled_tasks_and_a_tolerance_threshold_stay_calibrated():
    # three tasks at 2 seeds: 6^3 = 216 relabellings, so the test can decide, and must stay at its level
    assert _consistent_with_alpha(rate := false_verdict_rate("bimodal", 2, tasks=3)), rate
    # "within 0.1 of": the true difference is exactly -0.1, on the threshold
    assert _consistent_with_alpha(rate := false_verdict_rate("skewed", 5, threshold=-0.1)), rate


def test_the_rule_finds_a_real_effect_and_the_simulation_catches_a_bad_rule():
    rng = np.random.default_rng(1)
    x = rng.normal(0.65, 0.15, (1000, 1, 10))  # one standard deviation better
    y = rng.normal(0.5, 0.15, (1000, 1, 10))
    assert (_verdicts(x, y) == "supported").mean() > 0.45  # 54% measured at 10 seeds with IQM (docs/analysis.md)
    # The percentile bootstrap of the effect, settled when its CI excludes 0 (the rule before issue #18):
    settled = 0
    x, y = rng.normal(0.5, 0.15, (2, 400, 2))
    for xs, ys in zip(x, y, strict=True):
        ci = stats.effect_interval([[xs], [ys]], _difference, stats.iqm, reps=200)
        settled += ci.low > 0 or ci.high < 0
    assert settled / 400 > 0.2  # issue #18 measured 36.5% at 2 seeds
