"""Pack members in worker processes (``member_processes=true``, issue #17): the same learning, faults confined.

Each member's environments, replay and coverage live in a process of their own and
the update overlaps their environment steps; nothing of that may change what a
member learns. The comparisons run in float64, where the pack's batched kernels
and a trial alone agree to summation-order rounding (see test_packing.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from agent.train import run_pack, run_trial
from contract.config import build_config
from tests.agent.test_packing import KILLED_PACK_FRAMES, MEMBERS, PIXELS_TINY, pack_until_checkpointed
from tests.agent.test_train import TINY_STATES, comparable, read_metrics

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6

# Long enough to cross an episode end (cartpole: 1000 frames) and wrap a small replay ring, with evaluations and
# a checkpoint along the way; short enough that a trial alone and in a pack, whose float64 kernels differ in
# summation order (~1e-15), have not yet been pulled apart by the environment's chaos (measured: eval returns
# agree to 1.5e-7 at frame 1000 after 300 updates, and part after ~500).
STATES_RUN = {**TINY_STATES, "num_frames": 1200, "replay_capacity": 300, "checkpoint_every_frames": 1000}
# Pixels: across an episode end, a wrapping ring (60 transitions into 40 slots) and evaluations too; action
# repeat 20 makes an episode 50 rendered steps (rendering is what costs here: at repeat 8, 125 steps, the three
# packs took 66 s instead of 28 s on a Zen 4 host, 25/17) and still leaves 5 updates after the seed phase.
PIXELS_RUN = {
    **PIXELS_TINY,
    "action_repeat": 20,
    "num_frames": 1200,
    "num_seed_frames": 1000,
    "num_expl_steps": 400,
    "replay_capacity": 40,
    "eval_every_frames": 1200,
    "log_every_frames": 200,
}


def worker_pids(parent: int) -> dict[int, int]:
    """member index -> pid of each live worker process the trainer process ``parent`` started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agent.member_process" in argv and len(argv) >= 4 and argv[-2] == str(parent).encode():
            try:
                state = (entry / "stat").read_text().split(") ")[-1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found[int(argv[-3])] = int(entry.name)
    return found


def test_pack_of_three_in_worker_processes_equals_each_member_alone(float64, tmp_path):
    packed = [build_config({**STATES_RUN, **member, "member_processes": True}) for member in MEMBERS]
    outs = [tmp_path / f"pack{k}" for k in range(3)]
    assert [s.state for s in run_pack(packed, outs)] == ["completed"] * 3
    assert worker_pids(os.getpid()) == {}  # the pack's workers ended with it
    for k, member in enumerate(MEMBERS):
        alone = tmp_path / f"alone{k}"
        assert run_trial(build_config({**STATES_RUN, **member}), alone).state == "completed"
        got, expected = comparable(read_metrics(outs[k])), comparable(read_metrics(alone))
        assert got["train/episode_return"].notna().any()  # an episode ended
        assert got["losses/critic"].notna().any() and got["eval/episode_return"].notna().sum() >= 3
        pd.testing.assert_frame_equal(got, expected, rtol=TOLERANCE, atol=TOLERANCE)


# Placement keys change where and how fast, never what is computed: the same pack in one process (raw frames),
# on member threads (lz4) and in worker processes with the overlap (lz4) gives the same metrics, bit for bit.
PLACEMENTS = {
    "threads": {"env_threads": 2, "frame_codec": "lz4"},
    "workers": {"member_processes": True, "frame_codec": "lz4"},
}


@pytest.mark.parametrize("obs_type", ["states", "pixels"])
def test_worker_processes_threads_and_codec_change_nothing(obs_type, tmp_path):
    base = STATES_RUN if obs_type == "states" else PIXELS_RUN
    placements = PLACEMENTS if obs_type == "pixels" else {"workers": {"member_processes": True}}
    members = MEMBERS if obs_type == "states" else MEMBERS[:2]
    plain = [tmp_path / f"plain{k}" for k in range(len(members))]
    run_pack([build_config({**base, **member}) for member in members], plain)
    for name, placement in placements.items():
        outs = [tmp_path / f"{name}{k}" for k in range(len(members))]
        statuses = run_pack([build_config({**base, **member, **placement}) for member in members], outs)
        assert [s.state for s in statuses] == ["completed"] * len(members)
        for got, expected in zip(outs, plain):
            got_rows, expected_rows = comparable(read_metrics(got)), comparable(read_metrics(expected))
            assert got_rows["train/episode_return"].notna().any() and got_rows["losses/critic"].notna().any()
            assert got_rows["eval/episode_return"].notna().sum() >= 2
            pd.testing.assert_frame_equal(got_rows, expected_rows, check_exact=True)


def test_killed_pack_leaves_no_worker_and_resumes_exactly(tmp_path):
    overrides = [
        {**TINY_STATES, "num_frames": KILLED_PACK_FRAMES, "member_processes": True, **member} for member in MEMBERS
    ]
    killed = [tmp_path / f"killed{k}" for k in range(3)]
    process, checkpoints = pack_until_checkpointed(overrides, killed)
    workers = worker_pids(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert all(c.exists() for c in checkpoints), process.stderr.read().decode()
    assert sorted(workers) == [0, 1, 2]
    deadline = time.time() + 20
    while worker_pids(process.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert worker_pids(process.pid) == {}, "workers outlived their killed pack"

    resumed = run_pack([build_config(o) for o in overrides], killed)
    assert [s.state for s in resumed] == ["completed"] * 3
    assert {s.resumed_from_frame for s in resumed} <= {1000, 2000, 3000}
    # The reference runs in one process, without workers: the same pack, bit for bit.
    straight = [tmp_path / f"straight{k}" for k in range(3)]
    run_pack([build_config({**o, "member_processes": False}) for o in overrides], straight)
    for got, expected in zip(killed, straight):
        got_rows, expected_rows = comparable(read_metrics(got)), comparable(read_metrics(expected))
        assert not got_rows.duplicated().any()
        pd.testing.assert_frame_equal(got_rows, expected_rows)


class KillOwnWorker:
    """A member-level fault: member ``k``'s worker process is killed at ``frame``."""

    def __init__(self, k: int, frame: int):
        self.k, self.frame = k, frame

    def log(self, frame, metrics):
        if frame >= self.frame and (pid := worker_pids(os.getpid()).get(self.k)):
            os.kill(pid, signal.SIGKILL)

    def checkpoint(self, frame, path):
        pass

    def close(self, status):
        pass


def test_a_worker_that_dies_fails_its_member_while_the_others_go_on(float64, tmp_path):
    base = {**STATES_RUN, "member_processes": True}
    configs = [build_config({**base, "seed": seed}) for seed in (1, 2)]
    outs = [tmp_path / "healthy", tmp_path / "killed"]
    statuses = run_pack(configs, outs, sinks=[[], [KillOwnWorker(1, frame=1000)]])
    assert [s.state for s in statuses] == ["completed", "failed"]
    assert statuses[1].error == "the worker process of member 1 died (exit code -9)"
    assert json.loads((outs[1] / "status.json").read_text())["status"] == "failed"
    assert read_metrics(outs[1])["frame"].max() >= 1000  # what it logged before is kept
    # The healthy member went on as it would alone (float64: summation order only, as above).
    alone = tmp_path / "alone"
    run_trial(build_config({**base, "seed": 1, "member_processes": False}), alone)
    pd.testing.assert_frame_equal(
        comparable(read_metrics(outs[0])), comparable(read_metrics(alone)), rtol=TOLERANCE, atol=TOLERANCE
    )
