"""IQM, stratified-bootstrap CIs, probability of improvement and normalization on hand-checked arrays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp_stats

from analysis import stats


# ------------------------------------------------------------------ point estimates
@pytest.mark.parametrize(
    "scores, expected",
    [
        ([1, 2, 3, 4], 2.5),  # 4 runs: one trimmed each side -> mean(2, 3)
        ([1, 2, 3, 4, 100], 3.0),  # 5 runs: int(0.25 * 5) = 1 trimmed each side -> mean(2, 3, 4); the outlier is gone
        (list(range(8)), 3.5),  # mean(2, 3, 4, 5)
        ([0, 0, 3], 1.0),  # 3 runs: int(0.75) = 0 trimmed -> the plain mean, as scipy (and so rliable) does
        ([7.0], 7.0),
    ],
)
def test_iqm_hand_checked(scores, expected):
    assert stats.iqm(np.array(scores, dtype=float)) == pytest.approx(expected)


def test_iqm_pools_runs_of_all_tasks_like_rliable():
    # rliable: trim_mean(scores[runs, tasks], 0.25, axis=None). Pooled 1..8: 2 trimmed each side -> mean(3..6).
    runs_by_tasks = np.array([[1, 5], [2, 6], [3, 7], [4, 8]], dtype=float)
    per_task = [runs_by_tasks[:, 0], runs_by_tasks[:, 1]]
    assert stats.iqm(per_task) == pytest.approx(4.5)
    assert stats.iqm(per_task) == pytest.approx(sp_stats.trim_mean(runs_by_tasks, 0.25, axis=None))


def test_iqm_equals_scipy_trim_mean_for_every_size():
    rng = np.random.default_rng(2)
    for n in range(1, 14):
        scores = rng.normal(size=n)
        assert stats.iqm(scores) == pytest.approx(sp_stats.trim_mean(scores, 0.25))
    batch = rng.normal(size=(50, 7))  # bootstrap batches: one IQM per row of resampled runs
    assert stats.iqm([batch]) == pytest.approx(sp_stats.trim_mean(batch, 0.25, axis=1))


def test_mean_median_optimality_gap_follow_rliable():
    per_task = [np.array([0.0, 2.0]), np.array([4.0, 4.0, 4.0])]  # task means 1 and 4
    assert stats.mean(per_task) == pytest.approx(2.5)  # mean of task means, not of the 5 pooled runs (2.8)
    assert stats.median([np.array([1.0]), np.array([2.0]), np.array([10.0])]) == pytest.approx(2.0)
    assert stats.optimality_gap([np.array([0.5, 1.2])]) == pytest.approx(0.25)  # 1 - mean(0.5, min(1.2, 1))


# ------------------------------------------------------------------ intervals
def test_interval_of_two_values_spans_them():
    # Bootstrap means of [0, 1] take 0, 0.5, 1 with chances 1/4, 1/2, 1/4: the 2.5/97.5 percentiles are 0 and 1.
    est = stats.interval([0.0, 1.0], stats.mean)
    assert (est.point, est.low, est.high) == (0.5, 0.0, 1.0)
    assert not est.degenerate


def test_interval_hand_checked_tail():
    # [0, 0, 3]: IQM = mean. P(resample = [3, 3, 3]) = 1/27 = 3.7% > 2.5%, so the upper bound is 3;
    # P(all zeros) = 8/27, so the lower bound is 0.
    est = stats.interval([0.0, 0.0, 3.0])
    assert (est.point, est.low, est.high) == (1.0, 0.0, 3.0)


def test_bootstrap_is_stratified_by_task():
    # Runs are resampled within their task: every resample keeps 3 zeros and 3 tens, so the pooled IQM is always 5.
    # An unstratified bootstrap would mix the tasks and give a wide interval.
    est = stats.interval([[0.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    assert (est.point, est.low, est.high) == (5.0, 5.0, 5.0)
    # With spread inside tasks the mean of task means stays within [50, 51] (0/1 and 100/101 never mix).
    est = stats.interval([[0.0, 1.0], [100.0, 101.0]], stats.mean)
    assert est.point == pytest.approx(50.5)
    assert 50.0 <= est.low < est.point < est.high <= 51.0


def test_single_seed_interval_is_a_point():
    est = stats.interval([42.0])
    assert (est.point, est.low, est.high) == (42.0, 42.0, 42.0)
    assert est.degenerate
    assert stats.interval([[1.0], [3.0]], stats.mean).degenerate  # one run on each of two tasks


def test_interval_is_deterministic_and_seeded():
    scores = np.random.default_rng(5).normal(size=10)
    first, second = stats.interval(scores), stats.interval(scores)
    assert first == second
    assert stats.interval(scores, seed=1) != first  # the seed is what fixes it
    assert stats.interval(scores, reps=500).point == first.point


def test_interval_drops_non_finite_and_rejects_empty():
    assert stats.interval([1.0, np.nan, 3.0]).point == pytest.approx(2.0)
    with pytest.raises(ValueError):
        stats.interval([np.nan])


def test_confidence_level_widens_interval():
    scores = np.random.default_rng(1).normal(size=20)
    narrow = stats.interval(scores, confidence=0.5)
    wide = stats.interval(scores, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


# ------------------------------------------------------------------ probability of improvement
def test_probability_of_improvement_hand_checked():
    # x=[1,2,3] vs y=[0,2,4]: wins (1>0, 2>0, 3>0, 3>2) = 4, one tie (2=2) = 0.5 -> 4.5 / 9.
    assert stats.probability_of_improvement([[1, 2, 3]], [[0, 2, 4]]) == pytest.approx(0.5)
    assert stats.probability_of_improvement([[5, 6]], [[1, 2]]) == 1.0
    assert stats.probability_of_improvement([[1, 1]], [[1, 1]]) == 0.5  # all ties
    # Averaged over tasks: X always wins on task 1, always loses on task 2.
    assert stats.probability_of_improvement([[5, 6], [0, 0]], [[1, 2], [3, 4]]) == 0.5


def test_probability_of_improvement_matches_mann_whitney():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, size=7).astype(float), rng.integers(0, 5, size=5).astype(float)  # with ties
    u = sp_stats.mannwhitneyu(x, y, alternative="greater").statistic
    assert stats.probability_of_improvement([x], [y]) == pytest.approx(u / (len(x) * len(y)))


def test_poi_interval():
    est = stats.poi_interval([[5, 6, 7]], [[1, 2, 3]])
    assert (est.point, est.low, est.high) == (1.0, 1.0, 1.0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(1, 1, size=(2, 8)), rng.normal(0, 1, size=(2, 8))
    est = stats.poi_interval(list(x), list(y))
    assert 0.0 <= est.low <= est.point <= est.high <= 1.0
    assert est.point == pytest.approx(stats.probability_of_improvement(list(x), list(y)))
    with pytest.raises(ValueError):
        stats.poi_interval([[1.0]], [[1.0], [2.0]])


# ------------------------------------------------------------------ normalization
def test_normalization_by_task_maximum():
    assert stats.is_dmc_task("cartpole_swingup") and not stats.is_dmc_task("Hopper-v5")
    assert stats.normalize([500.0, 1000.0], "cartpole_swingup") == pytest.approx([0.5, 1.0])
    # Gymnasium has no maximum: this project normalizes by the best final return in the store.
    assert stats.normalize([1500.0], "Hopper-v5", observed_best=3000.0) == pytest.approx([0.5])
    with pytest.raises(ValueError):
        stats.max_return("Hopper-v5")


def test_point_estimates_match_rliables_where_it_installs():
    """The same numbers as rliable's aggregate functions on the same scores (runs x tasks)."""
    try:
        from rliable import metrics as rliable_metrics
    except Exception as err:  # noqa: BLE001 - ImportError, or arch failing under pandas 3 at import
        pytest.skip(
            f"rliable is not importable here ({type(err).__name__}: {err}); no arch release works with "
            f"rliable beside pandas 3 (docs/analysis.md)"
        )
    scores = np.random.default_rng(7).normal(0.6, 0.3, size=(10, 4))  # 10 runs x 4 tasks, rliable's layout
    per_task = [scores[:, j] for j in range(scores.shape[1])]
    assert np.isclose(float(stats.iqm(per_task)), rliable_metrics.aggregate_iqm(scores))
    assert np.isclose(float(stats.mean(per_task)), rliable_metrics.aggregate_mean(scores))
    assert np.isclose(float(stats.median(per_task)), rliable_metrics.aggregate_median(scores))
    assert np.isclose(float(stats.optimality_gap(per_task)), rliable_metrics.aggregate_optimality_gap(scores))
