"""A pack of K members learns, member by member, exactly what each member learns alone (issue #9).

Tolerance: the pack runs member k's layers as one batched kernel (``baddbmm``, grouped
convolution, a BatchNorm over K*width channels) where a trial of one runs the same
arithmetic on its own slice; the kernels may block their sums differently, so results
agree to summation-order rounding, not bit for bit. In float64 that is far below
1e-6 after 20 updates (measured: ~1e-9 on parameters and Adam moments).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agent.bn_modes import bn_layers
from agent.drqv2 import DrQV2Agent
from agent.train import run_pack, run_trial
from contract.config import ConfigError, build_config
from tests.agent.test_train import TINY_STATES, comparable, read_metrics

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-6
# Three members that differ in everything a member may differ in.
MEMBERS = [
    dict(seed=1, bn_mode="TTETT", lr=1e-3, target_bn_stats="independent"),
    dict(seed=2, bn_mode="TTTTT", lr=3e-3, critic_lr=1e-3, target_bn_stats="copy"),
    dict(seed=3, bn_mode="EEEEE", lr=2e-3, actor_lr=5e-4, target_bn_stats="soft"),
]
SHAPES = {"states": (5,), "pixels": (9, 24, 24)}


def _batches(obs_type: str, k: int, rows: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = SHAPES[obs_type]

    def obs():
        if obs_type == "pixels":
            return rng.integers(0, 256, (k, rows, *shape), dtype=np.uint8)
        return rng.normal(size=(k, rows, *shape)).astype(np.float32)

    return [
        {
            "obs": obs(),
            "next_obs": obs(),
            "action": rng.uniform(-1, 1, (k, rows, 1)).astype(np.float32),
            "reward": rng.normal(size=(k, rows, 1)).astype(np.float32),
            "discount": np.full((k, rows, 1), 0.97, np.float32),
        }
        for _ in range(count)
    ]


# Encoder BN under by_step runs the members' encoder passes in mixed modes (Critic-II/III: T, T, E).
ENCODER_BN = {"encoder_norm": "batch_norm", "encoder_bn_passes": "by_step"}


@pytest.mark.parametrize(
    "obs_type, extra",
    [("states", {}), ("pixels", {}), ("pixels", ENCODER_BN)],
    ids=["states", "pixels", "pixels-encoder-bn"],
)
def test_pack_of_three_mixed_modes_equals_each_member_alone(obs_type, extra, float64, tiny_config):
    configs = [tiny_config(obs_type=obs_type, **m, **extra) for m in MEMBERS]
    shape, cpu = SHAPES[obs_type], torch.device("cpu")
    pack = DrQV2Agent(configs, shape, 1, cpu)
    alone = [DrQV2Agent(config, shape, 1, cpu) for config in configs]
    for i, batch in enumerate(_batches(obs_type, 3, 8, 20)):
        packed_metrics = pack.update(batch, step=1000 + i).read()
        for k, agent in enumerate(alone):
            single = agent.update({key: value[k : k + 1] for key, value in batch.items()}, step=1000 + i).read()
            for name, values in single.items():
                if not name.startswith("perf/"):
                    assert packed_metrics[name][k] == pytest.approx(values[0], rel=TOLERANCE, abs=TOLERANCE), (
                        i,
                        k,
                        name,
                    )
    for k, agent in enumerate(alone):
        in_pack, by_itself = pack.member_state_dict(k), agent.member_state_dict(0)
        for net in ("encoder", "actor", "critic", "critic_target"):  # parameters and BN running statistics
            assert set(in_pack[net]) == set(by_itself[net])
            for key, value in by_itself[net].items():
                torch.testing.assert_close(
                    in_pack[net][key], value, rtol=TOLERANCE, atol=TOLERANCE, msg=f"member {k} {net}.{key}"
                )
        for opt in ("actor_opt", "critic_opt", "encoder_opt"):
            for index, entry in by_itself.get(opt, {"state": {}})["state"].items():
                for key, value in entry.items():
                    torch.testing.assert_close(in_pack[opt]["state"][index][key], value, rtol=TOLERANCE, atol=TOLERANCE)
        assert torch.equal(in_pack["generator"], by_itself["generator"])  # the same random draws
    # The T members' statistics moved, each its own way; the EEEEE member's never did.
    means = bn_layers(pack.critic)[0].running_mean
    assert not torch.allclose(means[0], means[1]) and not means[0].eq(0).all()
    assert means[2].eq(0).all()
    if extra:  # the same for the encoder's BN: by_step keeps EEEEE's encoder on running statistics
        encoder_means = bn_layers(pack.encoder)[0].running_mean
        assert not encoder_means[0].eq(0).all() and encoder_means[2].eq(0).all()


def test_members_must_share_what_fixes_shapes(tiny_config):
    with pytest.raises(ConfigError, match="hidden_dim=16 vs 32"):
        DrQV2Agent([tiny_config(), tiny_config(hidden_dim=32, seed=2)], (5,), 1, torch.device("cpu"))


PACK_SCRIPT = """
import sys
from contract.config import build_config
from agent.train import run_pack
overrides, outs = eval(sys.argv[1]), sys.argv[2:]
run_pack([build_config(o) for o in overrides], outs)
"""


def _pack_overrides(num_frames: int) -> list[dict]:
    return [{**TINY_STATES, "num_frames": num_frames, **member} for member in MEMBERS]


def pack_until_checkpointed(overrides: list[dict], outs: list[Path]) -> tuple[subprocess.Popen, list[Path]]:
    """A pack of ``overrides`` training into ``outs`` in a process of its own, once every member has written a
    checkpoint (or the process ended, or 240 s passed); the process and the checkpoint files."""
    process = subprocess.Popen(
        [sys.executable, "-c", PACK_SCRIPT, repr(overrides), *map(str, outs)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoints = [out / "checkpoint" / "state.pt" for out in outs]
    deadline = time.time() + 240
    while not all(c.exists() for c in checkpoints) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    return process, checkpoints


# Past the first checkpoint (where the pack is killed) to an episode end and a second checkpoint after it.
KILLED_PACK_FRAMES = 2500


def test_killed_pack_resumes_every_member_exactly(tmp_path):
    overrides = _pack_overrides(KILLED_PACK_FRAMES)
    killed = [tmp_path / f"killed{k}" for k in range(3)]
    process, checkpoints = pack_until_checkpointed(overrides, killed)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert all(c.exists() for c in checkpoints), process.stderr.read().decode()
    assert {json.loads((out / "status.json").read_text())["status"] for out in killed} == {"running"}

    statuses = run_pack([build_config(o) for o in overrides], killed)
    assert [s.state for s in statuses] == ["completed"] * 3
    assert {s.resumed_from_frame for s in statuses} <= {1000, 2000, 3000}
    straight = [tmp_path / f"straight{k}" for k in range(3)]
    run_pack([build_config(o) for o in overrides], straight)
    for resumed, reference in zip(killed, straight):
        got, expected = comparable(read_metrics(resumed)), comparable(read_metrics(reference))
        assert not got.duplicated().any()
        pd.testing.assert_frame_equal(got, expected)


class FailingSink:
    """A member-level fault: this member's sink breaks at a given frame."""

    def __init__(self, frame: int):
        self.frame = frame

    def log(self, frame, metrics):
        if frame >= self.frame:
            raise OSError("sink broke")

    def checkpoint(self, frame, path):
        pass

    def close(self, status):
        pass


def test_a_diverged_and_a_failed_member_end_while_the_others_go_on(tmp_path):
    base = {
        **TINY_STATES,
        "num_frames": 3000,
        "eval_every_frames": 0,
        "log_every_frames": 200,
        "optimizer": "sgd",
        "actor_norm": "none",
        "critic_norm": "none",
        "checkpoint_every_frames": 0,
    }
    configs = [
        build_config({**base, "seed": 1, "lr": 1e-4}),
        build_config({**base, "seed": 2, "lr": 1e4}),
        build_config({**base, "seed": 3, "lr": 1e-4}),
    ]
    outs = [tmp_path / name for name in ("healthy", "diverging", "failing")]
    statuses = run_pack(configs, outs, sinks=[[], [], [FailingSink(frame=1000)]])
    assert [s.state for s in statuses] == ["completed", "diverged", "failed"]
    assert statuses[0].frame == 3000
    assert (statuses[1].frame or 0) < 3000 and "non-finite" in (statuses[1].error or "")
    assert statuses[2].frame == 1000 and "sink broke" in (statuses[2].error or "")
    for out, status in zip(outs, statuses):
        assert json.loads((out / "status.json").read_text()) == status.to_json()  # what it returns is on disk
    # The healthy member learned exactly what it learns alone (a pack of one, same float32 kernels).
    alone = run_trial(configs[0], tmp_path / "alone")
    assert alone.state == "completed"
    got, expected = comparable(read_metrics(outs[0])), comparable(read_metrics(tmp_path / "alone"))
    pd.testing.assert_frame_equal(got, expected, rtol=1e-3, atol=1e-3)


PIXELS_TINY = dict(
    task="cartpole_swingup",
    obs_type="pixels",
    hidden_dim=16,
    feature_dim=8,
    batch_size=4,
    num_seed_frames=80,
    num_expl_steps=40,
    eval_every_frames=120,
    num_eval_episodes=1,
    log_every_frames=40,
    checkpoint_every_frames=0,
    q_bias_max_states=20,
    torch_threads=1,
    num_frames=120,
)


# env_threads and frame_codec=lz4 against a plain pack: tests/agent/test_member_processes.py
# (test_worker_processes_threads_and_codec_change_nothing), with worker processes beside them.


def test_bf16_precision_trains_and_tf32_needs_cuda(tmp_path):
    status = run_trial(build_config({**TINY_STATES, "num_frames": 1000, "precision": "bf16"}), tmp_path)
    assert status.state == "completed", status.traceback
    assert read_metrics(tmp_path)["losses/critic"].notna().any()
    with pytest.raises(ConfigError, match="precision=tf32 is a CUDA setting"):
        build_config({"precision": "tf32"})


def test_render_device_follows_the_visible_cuda_devices():
    from envs.render_device import physical_gpu

    assert physical_gpu(0, None) == 0 and physical_gpu(1, "") == 1
    assert physical_gpu(0, "3,5") == 3 and physical_gpu(1, "3, 5") == 5
    assert physical_gpu(0, "GPU-5d3c") == 0  # UUIDs: the visible index
