"""n-step targets, episode boundaries and frame stacking on hand-built episodes; compressed frame stores
against the uncompressed one on real dm_control frames."""

from __future__ import annotations

import io

import numpy as np
import pytest

from agent.replay import FRAME_CODECS, ReplayBuffer

COMPRESSED = [codec for codec in FRAME_CODECS if codec != "none"]


def fill(replay, rewards, discounts=None, first_frame=0, last=True):
    """One episode: frame value t at step t; reward r_t and discount d_t arrive at step t (t >= 1)."""
    discounts = discounts or [1.0] * len(rewards)
    replay.add(np.full(replay.frame_shape, first_frame), None, 0.0, 1.0, first=True, last=False)
    for t, (r, d) in enumerate(zip(rewards, discounts), start=1):
        is_last = last and t == len(rewards)
        replay.add(np.full(replay.frame_shape, first_frame + t), np.array([t / 10]), r, d, first=False, last=is_last)


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
    replay.add(np.full((1, 2, 2), 50), None, 0.0, 1.0, first=True, last=False)  # a new episode starts at g=5
    replay.add(np.full((1, 2, 2), 51), np.array([0.0]), 0.0, 1.0, first=False, last=False)
    replay.add(np.full((1, 2, 2), 52), np.array([0.0]), 0.0, 1.0, first=False, last=False)
    out = replay.transitions(np.array([0, 2, 5, 6]))
    stacks = out["obs"][:, :, 0, 0]
    np.testing.assert_array_equal(stacks, [[10, 10, 10], [10, 11, 12], [50, 50, 50], [50, 50, 51]])
    np.testing.assert_array_equal(out["next_obs"][:, :, 0, 0], [[10, 10, 11], [11, 12, 13], [50, 50, 51], [50, 51, 52]])


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


# ------------------------------------------------ compressed frame stores on real frames

# Episode lengths in agent steps (frames = steps + 1): short ones exercise the stack clamping at episode
# starts and keyframes at odd indices; the replays below hold fewer slots than these steps (the ring wraps).
EPISODES = [2, 3, 40, 9, 1, 57, 17, 5, 33, 12, 26]


@pytest.fixture(scope="module")
def steps():
    """Real cartpole pixel frames (random actions) cut into EPISODES: (frame, action, reward, discount, first,
    last) per step, the last episode left running, one episode ending in a termination (discount 0)."""
    from envs import make_env

    env = make_env("cartpole_swingup", "pixels", 3, 2, 3)
    rng = np.random.default_rng(0)
    out = []
    for e, length in enumerate(EPISODES):
        step = env.reset()
        out.append((step.frame, None, 0.0, 1.0, dict(first=True, last=False)))
        for t in range(1, length + 1):
            action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
            step = env.step(action)
            last = t == length and e < len(EPISODES) - 1
            discount = 0.0 if (last and e == 2) else step.discount
            out.append((step.frame, action, step.reward, discount, dict(first=False, last=last)))
    env.close()
    return out


def make_replay(codec, capacity=96, nstep=3):
    return ReplayBuffer(capacity, (3, 84, 84), np.uint8, 3, 1, nstep=nstep, discount=0.99, seed=7, frame_codec=codec)


def assert_same_batches(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def all_valid(replay):
    g = np.arange(replay._low(), replay.next_index - 1)
    return g[replay._valid(g)]


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize("nstep", [1, 3])
def test_compressed_store_samples_the_same_batches_as_uncompressed(steps, codec, nstep):
    plain, packed = make_replay("none", nstep=nstep), make_replay(codec, nstep=nstep)
    checked_after_wrap = 0
    for n, step in enumerate(steps):
        plain.add(*step[:-1], **step[-1])
        packed.add(*step[:-1], **step[-1])
        if n % 23 == 22 and plain.can_sample():
            # Every stored transition (episode starts, cut windows, the running episode, the wrapped ring) ...
            g = all_valid(plain)
            assert_same_batches(plain.transitions(g), packed.transitions(g))
            # ... and uniform batches: same indices drawn, same bytes.
            assert_same_batches(plain.sample(64), packed.sample(64))
            checked_after_wrap += plain.next_index > plain.capacity
    assert checked_after_wrap >= 5 and plain.next_index > 2 * plain.capacity
    assert plain.rng.bit_generator.state == packed.rng.bit_generator.state


@pytest.mark.parametrize("codec", COMPRESSED)
def test_compressed_state_dict_round_trips_without_pickle(steps, codec):
    replay = make_replay(codec)
    for step in steps[:150]:
        replay.add(*step[:-1], **step[-1])
    state = replay.state_dict()
    for key, value in state.items():
        assert isinstance(value, (np.ndarray, np.integer, str)), (key, type(value))
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        loaded = {key: saved[key] for key in saved.files}
    copy = make_replay(codec)
    copy.load_state_dict(loaded)
    copy.rng.bit_generator.state = replay.rng.bit_generator.state
    assert_same_batches(replay.transitions(all_valid(replay)), copy.transitions(all_valid(copy)))
    # Both go on identically: the open chunk and the previous frame (delta base) were restored.
    for step in steps[150:]:
        replay.add(*step[:-1], **step[-1])
        copy.add(*step[:-1], **step[-1])
    assert_same_batches(replay.sample(64), copy.sample(64))
    assert replay.bytes_per_transition == copy.bytes_per_transition
    with pytest.raises(ValueError, match="frame_codec"):
        make_replay("none").load_state_dict(loaded)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_compressed_store_is_smaller_and_grows_as_it_fills(steps, codec):
    plain, packed = make_replay("none", capacity=1000), make_replay(codec, capacity=1000)
    empty = packed.bytes_per_transition  # per-slot arrays and the frame index only
    assert empty < 100
    for step in steps[:100]:
        plain.add(*step[:-1], **step[-1])
        packed.add(*step[:-1], **step[-1])
    held_100 = packed._store.data_nbytes
    for step in steps[100:]:
        packed.add(*step[:-1], **step[-1])
    assert held_100 < packed._store.data_nbytes < len(packed) * 84 * 84 * 3 / 2
    # Cartpole's frames barely change from step to step: far below half of the uncompressed store.
    assert packed.bytes_per_transition < 0.5 * plain.bytes_per_transition
    # A paper-sized replay allocates no frame memory up front (uncompressed it would be 21 GB).
    assert make_replay(codec, capacity=1_000_000).bytes_per_transition < 100


def test_compressed_codecs_refuse_state_vectors_and_unknown_names():
    with pytest.raises(ValueError, match="uint8 pixel frames only"):
        ReplayBuffer(10, (5,), np.float32, 1, 1, nstep=3, discount=0.99, seed=0, frame_codec=COMPRESSED[0])
    with pytest.raises(ValueError, match="must be one of"):
        ReplayBuffer(10, (3, 4, 4), np.uint8, 3, 1, nstep=3, discount=0.99, seed=0, frame_codec="png")


@pytest.mark.parametrize("codec", FRAME_CODECS)
def test_batch_spec_is_what_sample_returns(steps, codec):
    """A worker lays out its batch slot from batch_spec: it must be sample's shapes and dtypes exactly."""
    replay = make_replay(codec)
    for step in steps[:60]:
        replay.add(*step[:-1], **step[-1])
    states = ReplayBuffer(32, (5,), np.float32, 1, 2, nstep=3, discount=0.99, seed=1)
    for i in range(20):
        states.add(np.full(5, i, np.float32), None if i == 0 else np.zeros(2), 1.0, 1.0, first=i == 0, last=False)
    for buffer in (replay, states):
        batch = buffer.sample(8)
        assert buffer.batch_spec(8) == {key: (value.shape, value.dtype.str) for key, value in batch.items()}
