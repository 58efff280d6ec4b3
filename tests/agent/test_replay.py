"""n-step targets, episode boundaries and frame stacking on hand-built episodes."""

from __future__ import annotations

import numpy as np
import pytest

from agent.replay import ReplayBuffer


def fill(replay, rewards, discounts=None, first_frame=0, last=True):
    """One episode: frame value t at step t; reward r_t and discount d_t arrive at step t (t >= 1)."""
    discounts = discounts or [1.0] * len(rewards)
    replay.add(np.full(replay.frames.shape[1:], first_frame), None, 0.0, 1.0, True, False)
    for t, (r, d) in enumerate(zip(rewards, discounts), start=1):
        is_last = last and t == len(rewards)
        replay.add(np.full(replay.frames.shape[1:], first_frame + t), np.array([t / 10]), r, d, False, is_last)


def test_nstep_return_and_discount_by_hand():
    replay = ReplayBuffer(100, (1,), np.float32, 1, 1, nstep=3, discount=0.5, seed=0)
    fill(replay, [1.0, 2.0, 4.0, 8.0, 16.0])  # steps 0..5
    out = replay.transitions(np.array([0, 1]))
    # from s0: r1 + .5 r2 + .25 r3 = 1 + 1 + 1
    np.testing.assert_allclose(out["reward"][:, 0], [3.0, 2.0 + 2.0 + 2.0])
    np.testing.assert_allclose(out["discount"][:, 0], [0.125, 0.125])
    np.testing.assert_array_equal(out["obs"][:, 0], [0, 1])
    np.testing.assert_array_equal(out["next_obs"][:, 0], [3, 4])
    np.testing.assert_allclose(out["action"][:, 0], [0.1, 0.2])  # the action taken in s_t


def test_window_is_cut_at_a_finished_episode_end():
    replay = ReplayBuffer(100, (1,), np.float32, 1, 1, nstep=3, discount=0.5, seed=0)
    fill(replay, [1.0, 2.0, 4.0])  # steps 0..3, last at 3
    out = replay.transitions(np.array([2]))  # only one step left: r3, bootstrap from s3
    np.testing.assert_allclose(out["reward"][:, 0], [4.0])
    np.testing.assert_allclose(out["discount"][:, 0], [0.5])
    np.testing.assert_array_equal(out["next_obs"][:, 0], [3])


def test_termination_zeroes_the_bootstrap():
    replay = ReplayBuffer(100, (1,), np.float32, 1, 1, nstep=3, discount=0.5, seed=0)
    fill(replay, [1.0, 2.0], discounts=[1.0, 0.0])  # terminates at step 2
    out = replay.transitions(np.array([0]))
    np.testing.assert_allclose(out["reward"][:, 0], [1.0 + 0.5 * 2.0])
    np.testing.assert_allclose(out["discount"][:, 0], [0.0])


def test_sampling_never_crosses_episodes_or_waits_for_the_running_one():
    replay = ReplayBuffer(1000, (1,), np.float32, 1, 1, nstep=3, discount=0.9, seed=1)
    fill(replay, [1.0] * 5, first_frame=0)  # episode A: g 0..5, finished
    fill(replay, [1.0] * 4, first_frame=100, last=False)  # episode B running: g 6..10
    g = replay.sample_indices(5000)
    assert set(np.unique(g)) == {0, 1, 2, 3, 4, 6, 7}  # never A's last step; B needs its full window
    out = replay.transitions(g)
    same_episode = (out["obs"][:, 0] >= 100) == (out["next_obs"][:, 0] >= 100)
    assert same_episode.all()


def test_frame_stack_rebuilt_and_clamped_at_episode_start():
    replay = ReplayBuffer(100, (1, 2, 2), np.uint8, 3, 1, nstep=1, discount=0.99, seed=0)
    fill(replay, [0.0] * 4, first_frame=10)
    replay.add(np.full((1, 2, 2), 50), None, 0.0, 1.0, True, False)  # a new episode starts at g=5
    replay.add(np.full((1, 2, 2), 51), np.array([0.0]), 0.0, 1.0, False, False)
    replay.add(np.full((1, 2, 2), 52), np.array([0.0]), 0.0, 1.0, False, False)
    out = replay.transitions(np.array([0, 2, 5, 6]))
    stacks = out["obs"][:, :, 0, 0]
    np.testing.assert_array_equal(stacks, [[10, 10, 10], [10, 11, 12], [50, 50, 50], [50, 50, 51]])
    np.testing.assert_array_equal(out["next_obs"][:, :, 0, 0], [[10, 10, 11], [11, 12, 13], [50, 50, 51],
                                                                   [50, 51, 52]])


def test_ring_overwrites_oldest_and_stays_consistent():
    replay = ReplayBuffer(8, (1,), np.float32, 1, 1, nstep=2, discount=1.0, seed=0)
    for episode in range(4):
        fill(replay, [1.0, 1.0, 1.0], first_frame=episode * 10)
    assert len(replay) == 8 and replay.next_index == 16
    out = replay.sample(256)
    np.testing.assert_array_equal(out["next_obs"][:, 0] // 10, out["obs"][:, 0] // 10)
    assert (out["obs"][:, 0] >= 20).all()  # episodes 0 and 1 were overwritten


def test_pixel_replay_stores_each_frame_once():
    replay = ReplayBuffer(1000, (3, 84, 84), np.uint8, 3, 6, nstep=3, discount=0.99, seed=0)
    assert replay.bytes_per_transition == pytest.approx(84 * 84 * 3 + 6 * 4 + 4 + 4 + 8 + 8)
    assert replay.bytes_per_transition < 3 * 84 * 84 * 3 / 2  # far below a stacked-frame store


def test_state_dict_round_trip():
    replay = ReplayBuffer(50, (2,), np.float32, 1, 1, nstep=3, discount=0.9, seed=0)
    fill(replay, [1.0, 2.0, 3.0, 4.0])
    copy = ReplayBuffer(50, (2,), np.float32, 1, 1, nstep=3, discount=0.9, seed=0)
    copy.load_state_dict(replay.state_dict())
    for key, value in replay.transitions(np.arange(4)).items():
        np.testing.assert_array_equal(value, copy.transitions(np.arange(4))[key])
