"""Q-bias and coverage against hand-computed values (method.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.metrics import Coverage, discounted_returns, projection_matrix, q_bias


def test_discounted_returns_by_hand():
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])
    # Truncated at the episode's end: the last state's return is its own reward.
    np.testing.assert_allclose(discounted_returns(np.array([3.0]), 0.99), [3.0])


def test_q_bias_by_hand():
    returns = np.array([1.0, 3.0])  # mean 2
    q = np.array([2.0, 2.0])  # relative bias: (1/2.001, -1/2.001)
    mean, std = q_bias(q, returns)
    assert mean == pytest.approx(0.0)
    assert std == pytest.approx(1.0 / 2.001)
    mean, std = q_bias(np.array([4.0, 6.0]), returns)  # +3 everywhere
    assert mean == pytest.approx(3.0 / 2.001) and std == pytest.approx(0.0)


def test_coverage_cells_by_hand():
    projection = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    coverage = Coverage(projection, cell_size=0.5)
    # [s; a] = [0.1, 0.2 | 0.2] -> P x = [0.1, 0.4] -> cell (0, 0)
    np.testing.assert_array_equal(coverage.cell(np.array([0.1, 0.2]), np.array([0.2])), [0, 0])
    coverage.add(np.array([0.1, 0.2]), np.array([0.2]))
    coverage.add(np.array([0.4, 0.0]), np.array([0.4]))  # [0.4, 0.4] -> (0, 0) again
    assert len(coverage) == 1
    coverage.add(np.array([-0.1, 0.3]), np.array([0.3]))  # [-0.1, 0.6] -> (-1, 1)
    assert len(coverage) == 2
    np.testing.assert_array_equal(coverage.cell(np.array([-0.1, 0.3]), np.array([0.3])), [-1, 1])
    restored = Coverage(projection, 0.5)
    restored.load_state_dict(coverage.state_dict())
    assert len(restored) == 2


def test_projection_is_fixed_per_task_and_gaussian():
    a = projection_matrix("cartpole_swingup", 6, 4)
    np.testing.assert_array_equal(a, projection_matrix("cartpole_swingup", 6, 4))
    assert not np.array_equal(a, projection_matrix("walker_walk", 6, 4))
    big = projection_matrix("cheetah_run", 400, 4)
    assert abs(big.std() * np.sqrt(400) - 1.0) < 0.05  # N(0, 1/d) entries


def test_state_cells_by_hand():
    from agent.metrics import STATE_COVERAGE, StateCoverage

    coverage = StateCoverage(reference_steps=2, cell_size=0.5, reach=4.0)
    coverage.add(np.array([0.0, 5.0, 1.0]))
    assert len(coverage) == 0  # counted once the reference is complete
    coverage.add(np.array([2.0, 5.0, 3.0]))  # reference: mean (1, 5, 2), std (1, 0, 1); dimension 2 is left out
    assert len(coverage) == 2  # z = (-1, -1) -> cell (-2, -2); z = (1, 1) -> (2, 2)
    coverage.add(np.array([1.2, 9.0, 2.2]))  # z = (0.2, 0.2) -> (0, 0): the unscaled dimension does not count
    coverage.add(np.array([1.4, 5.0, 2.4]))  # (0.4, 0.4) -> (0, 0) again
    assert len(coverage) == 3
    coverage.add(np.array([5.5, 5.0, 2.0]))  # z = 4.5 > reach: far outside the reference, not counted
    assert len(coverage) == 3
    restored = StateCoverage(2)
    restored.load_state_dict(coverage.state_dict())
    assert restored.cells == coverage.cells and np.array_equal(restored.center, coverage.center)
    both = Coverage(np.eye(2), 0.5, state_reference_steps=2)
    both.add(np.array([0.0]), np.array([0.0]))
    both.add(np.array([1.0]), np.array([0.0]))
    assert both.values() == {"coverage/cells": 2.0, STATE_COVERAGE: 2.0}
    old_checkpoint = Coverage(np.eye(2), 0.5, state_reference_steps=2)
    old_checkpoint.load_state_dict({"cells": sorted(both.cells)})  # written before coverage/state_cells
    assert old_checkpoint.values() == {"coverage/cells": 2.0}  # no count from a reference it never saw
