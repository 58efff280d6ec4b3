"""Whole trials on real dm_control / Gymnasium environments, tiny networks and budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from agent.metrics import COLUMNS
from agent.train import run_trial
from contract.config import build_config
from envs import check_task_name, make_env

REPO = Path(__file__).resolve().parents[2]
TINY_STATES = dict(
    task="cartpole_swingup",
    obs_type="states",
    hidden_dim=16,
    feature_dim=8,
    batch_size=8,
    num_seed_frames=400,
    num_expl_steps=200,
    eval_every_frames=1000,
    num_eval_episodes=1,
    log_every_frames=500,
    checkpoint_every_frames=1000,
    q_bias_max_states=200,
    torch_threads=1,
)


def read_metrics(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "metrics.csv")


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Everything but wall-clock measurements."""
    return frame.drop(columns=[c for c in frame.columns if c.startswith("perf/")]).reset_index(drop=True)


def test_states_trial_writes_config_metrics_status(tmp_path):
    config = build_config({**TINY_STATES, "num_frames": 2000})
    status = run_trial(config, tmp_path)
    assert status.state == "completed" and status.frame == 2000
    saved = json.loads((tmp_path / "status.json").read_text())
    assert saved["status"] == "completed" and saved["wall_time_s"] > 0
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config.to_dict()
    metrics = read_metrics(tmp_path)
    assert tuple(metrics.columns) == COLUMNS
    assert metrics["frame"].is_monotonic_increasing
    evals = metrics.dropna(subset=["eval/episode_return"])
    assert list(evals["frame"]) == [0, 1000, 2000]
    assert evals[["q_bias/mean", "q_bias/std", "coverage/cells"]].notna().all().all()
    trained = metrics.dropna(subset=["losses/critic"])
    assert len(trained) >= 2
    for name in ("losses/actor", "q/mean", "actor/std", "bn/critic_i_batch_vs_running", "perf/update_ms"):
        assert trained[name].notna().all(), name
    episodes = metrics.dropna(subset=["train/episode_return"])
    assert (episodes["train/episode_length"] == 1000).all()  # cartpole: 1000 frames an episode
    assert metrics["coverage/cells"].dropna().is_monotonic_increasing
    assert (tmp_path / "checkpoint" / "state.pt").exists()


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    config = build_config({**TINY_STATES, "num_frames": 1500, "checkpoint_every_frames": 0})
    run_trial(config, tmp_path / "a")
    run_trial(config, tmp_path / "b")
    pd.testing.assert_frame_equal(comparable(read_metrics(tmp_path / "a")), comparable(read_metrics(tmp_path / "b")))
    other = build_config({**TINY_STATES, "num_frames": 1500, "checkpoint_every_frames": 0, "seed": 2})
    run_trial(other, tmp_path / "c")
    assert not comparable(read_metrics(tmp_path / "a")).equals(comparable(read_metrics(tmp_path / "c")))


def test_killed_trial_resumes_from_its_checkpoint_exactly(tmp_path):
    overrides = {**TINY_STATES, "num_frames": 4000}
    killed = tmp_path / "killed"
    args = [f"{k}={v}" for k, v in overrides.items()] + [f"out={killed}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.train", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    checkpoint = killed / "checkpoint" / "state.pt"
    deadline = time.time() + 240
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists(), process.stderr.read().decode()
    assert json.loads((killed / "status.json").read_text())["status"] == "running"  # killed mid-trial

    status = run_trial(build_config(overrides), killed)
    assert status.state == "completed" and status.frame == 4000
    assert status.resumed_from_frame in (1000, 2000, 3000)
    reference = tmp_path / "uninterrupted"
    run_trial(build_config(overrides), reference)
    resumed, straight = comparable(read_metrics(killed)), comparable(read_metrics(reference))
    assert not resumed.duplicated().any()
    pd.testing.assert_frame_equal(resumed, straight)


def test_pixels_trial_runs_updates_headless(tmp_path):
    config = build_config(
        {
            "task": "cartpole_swingup",
            "obs_type": "pixels",
            "num_frames": 120,
            "hidden_dim": 16,
            "feature_dim": 8,
            "batch_size": 4,
            "num_seed_frames": 80,
            "num_expl_steps": 40,
            "eval_every_frames": 0,
            "log_every_frames": 40,
            "checkpoint_every_frames": 0,
            "torch_threads": 1,
        }
    )
    status = run_trial(config, tmp_path)
    assert status.state == "completed", status.traceback
    trained = read_metrics(tmp_path).dropna(subset=["losses/critic"])
    assert len(trained) >= 1 and trained["perf/update_ms"].notna().all()


def test_pixel_env_renders_stacked_frames_and_exposes_state():
    env = make_env("cartpole_swingup", "pixels", seed=0, action_repeat=2, frame_stack=3)
    first = env.reset()
    assert first.obs.shape == (9, 84, 84) and first.obs.dtype.name == "uint8"
    assert first.frame.shape == (3, 84, 84) and first.state.shape == (env.state_dim,) == (5,)
    assert (first.obs[:3] == first.obs[6:]).all()  # the first frame fills the stack
    step = env.step(env_action := __import__("numpy").ones(env.action_dim, dtype="float32"))
    assert (step.obs[6:] == step.frame).all() and step.reward >= 0 and env_action.shape == (1,)
    assert first.frame.std() > 0  # a real image, not a blank buffer
    env.close()


def test_diverging_trial_stops_as_diverged_and_keeps_its_metrics(tmp_path):
    config = build_config(
        {
            **TINY_STATES,
            "num_frames": 3000,
            "optimizer": "sgd",
            "lr": 1e4,
            "critic_norm": "none",
            "actor_norm": "none",
            "eval_every_frames": 0,
            "log_every_frames": 200,
        }
    )
    status = run_trial(config, tmp_path)
    assert status.state == "diverged" and "non-finite" in (status.error or "")
    assert (status.frame or 0) < 3000
    assert len(read_metrics(tmp_path)) >= 1


def test_gymnasium_task_runs_with_states(tmp_path):
    config = build_config({**TINY_STATES, "task": "Hopper-v5", "num_frames": 600, "eval_every_frames": 600})
    assert (config.action_repeat, config.frame_stack) == (1, 1)
    status = run_trial(config, tmp_path)
    assert status.state == "completed", status.traceback
    assert read_metrics(tmp_path)["eval/episode_return"].notna().sum() == 2


def test_unknown_task_lists_close_names():
    with pytest.raises(ValueError, match="walker_walk"):
        check_task_name("walker_wlak")
    with pytest.raises(ValueError, match="HalfCheetah-v5"):
        check_task_name("HalfCheeta-v5")
    check_task_name("cup_catch")  # DrQ-v2's alias for ball_in_cup_catch


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.train",
            "task=cartpole_swingup",
            "obs_type=states",
            "num_frames=600",
            "seed=1",
            "hidden_dim=16",
            "batch_size=8",
            "num_seed_frames=400",
            "eval_every_frames=0",
            "torch_threads=1",
            f"out={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "completed: 600 frames" in result.stdout
    for name in ("config.yaml", "metrics.csv", "status.json"):
        assert (out / name).exists()
