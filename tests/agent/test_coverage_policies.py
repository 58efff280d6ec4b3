"""The exploration proxy (coverage/state_cells, method.md §7) on real dm_control with scripted policies.

What it must do (issue #18): at equal competence, more action noise gives more coverage; a policy that fails by
pumping energy into the pole and never balancing does not beat one that swings up and balances. The old
projection (coverage/cells) fails the second; the test shows that too, so it measures something. Each run is as
a trial feeds its Coverage: 2000 agent steps of uniform-random actions (the exploration phase, which fixes the
state cells' reference), then the policy; cartpole_swingup from states, action repeat 2.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from agent.metrics import COVERAGE, STATE_COVERAGE, Coverage, projection_matrix
from envs import make_env

TASK = "cartpole_swingup"
RANDOM_STEPS = 2000  # num_expl_steps, the default of every trial
POLICY_STEPS = 3000  # six episodes of 500 agent steps
Policy = Callable[[np.ndarray], float]


def swing_up_and_balance(state: np.ndarray) -> float:
    """Energy pumping until the pole is near upright, then a PD catch that also centres the cart."""
    cart, cos, sin, cart_velocity, angular_velocity = state
    if cos > 0.85:
        return 10.0 * np.arctan2(sin, cos) + 2.0 * angular_velocity + 1.5 * cart + 1.5 * cart_velocity
    energy = 0.5 * angular_velocity**2 + 9.8 * (cos - 1.0)  # below 0: not enough to reach the top yet
    push = -np.sign(angular_velocity * cos)
    return push if energy < 0 else -0.2 * push


def pump_forever(state: np.ndarray) -> float:
    """Pumps energy on every step and never catches: the pole spins faster and faster."""
    _, cos, _, _, angular_velocity = state
    return -np.sign(angular_velocity * cos) if abs(angular_velocity) > 1e-3 else 1.0


def _run(policy: Policy | None, noise: float, seed: int) -> tuple[dict[str, float], float]:
    """(coverage values, mean return of the policy's episodes) of RANDOM_STEPS random then POLICY_STEPS policy."""
    env = make_env(TASK, "states", seed, 2, 1)
    coverage = Coverage(projection_matrix(TASK, env.state_dim + env.action_dim, 4), 0.5, RANDOM_STEPS)
    rng = np.random.default_rng(seed)
    step, returns, episode_return = env.reset(), [], 0.0
    for t in range(RANDOM_STEPS + POLICY_STEPS):
        if step.last:
            if t > RANDOM_STEPS:
                returns.append(episode_return)
            step, episode_return = env.reset(), 0.0
        if t < RANDOM_STEPS or policy is None:
            action = rng.uniform(-1.0, 1.0, size=env.action_dim)
        else:
            action = np.clip([policy(step.state) + noise * rng.normal()], -1.0, 1.0)
        coverage.add(step.state, action)
        step = env.step(action)
        episode_return += step.reward
    return coverage.values(), float(np.mean(returns))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_cells_reward_noise_at_equal_competence_and_not_failure(seed):
    runs = {
        "balance": _run(swing_up_and_balance, 0.0, seed),
        "balance, noise 0.2": _run(swing_up_and_balance, 0.2, seed),
        "pump forever": _run(pump_forever, 0.0, seed),
    }
    (quiet, quiet_return), (noisy, noisy_return), (spinning, spinning_return) = runs.values()
    # the premises: the two balancing policies are equally competent, the pumping one fails
    assert quiet_return > 750 and abs(noisy_return - quiet_return) < 100, runs
    assert spinning_return < 300, runs
    assert noisy[STATE_COVERAGE] > quiet[STATE_COVERAGE], runs  # more noise, more coverage
    assert spinning[STATE_COVERAGE] <= quiet[STATE_COVERAGE], runs  # failing by swinging earns nothing
    # the old projection rewards the failure by a wide margin (issue #18's finding)
    assert spinning[COVERAGE] > 2 * quiet[COVERAGE], runs
