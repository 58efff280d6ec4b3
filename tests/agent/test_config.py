"""Invalid configs fail before training, naming key, value and what is allowed."""

from __future__ import annotations

import pytest

from agent import train
from agent.config import FIELDS, ConfigError, build_config

BAD = [
    ({"bn_mode": "TTXTT"}, ["bn_mode", "TTXTT", "T (train) or E (eval)"]),
    ({"bn_mode": "TTET"}, ["bn_mode", "TTET", "5 letters"]),
    ({"bn_mode": "TTETT", "critic_norm": "none", "actor_norm": "none"}, ["bn_mode", "batch_norm", "absent"]),
    ({"bn_mode": "TTETT", "critic_norm": "layer_norm", "actor_norm": "none"}, ["bn_mode", "layer_norm"]),
    ({"buffer_mix_ratio": -0.5, "bn_mode": "TTTTT"}, ["buffer_mix_ratio", "-0.5", "[0, 4.0]"]),
    ({"buffer_mix_ratio": 5, "bn_mode": "TTTTT"}, ["buffer_mix_ratio", "[0, 4.0]"]),
    ({"buffer_mix_ratio": 0.5}, ["buffer_mix_ratio", "Critic-I = E", "allow_mix_in_eval_mode"]),
    ({"optimizer": "rmsprop"}, ["optimizer", "rmsprop", "adam, sgd"]),
    ({"lr": 0}, ["lr", "must be > 0"]),
    ({"lr": -1e-4}, ["lr", "must be > 0"]),
    ({"lr": "fast"}, ["lr", "fast", "float"]),
    ({"critic_norm": "group_norm"}, ["critic_norm", "group_norm", "none, layer_norm, batch_norm"]),
    ({"target_bn_stats": "ema"}, ["target_bn_stats", "ema", "independent, copy, soft"]),
    ({"obs_type": "rgb"}, ["obs_type", "rgb", "pixels, states"]),
    ({"batch_sise": 256}, ["batch_sise", "batch_size"]),
    ({"task": "cartpole_swingp"}, ["task", "cartpole_swingup"]),
    ({"task": "Hoper-v5"}, ["task", "Hopper-v5"]),
    ({"nstep": 0}, ["nstep", ">= 1"]),
    ({"stddev_schedule": "cosine(1,0)"}, ["stddev_schedule", "linear(init,final,agent_steps)"]),
    ({"device": "gpu"}, ["device", "cpu, cuda"]),
]


@pytest.mark.parametrize("overrides, words", BAD, ids=[str(b[0]) for b in BAD])
def test_invalid_config_names_key_value_and_allowed(overrides, words):
    with pytest.raises(ConfigError) as info:
        build_config(overrides)
    for word in words:
        assert word in str(info.value)


def test_cli_rejects_before_training(tmp_path, capsys):
    out = tmp_path / "trial"
    assert train.main(["bn_mode=TTXTT", "task=cartpole_swingup", f"out={out}"]) == 2
    assert "bn_mode" in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_defaults_are_ma_bn_and_presets_apply_before_overrides():
    config = build_config({"task": "cartpole_swingup"})
    assert (config.actor_norm, config.critic_norm, config.bn_mode) == ("batch_norm", "batch_norm", "TTETT")
    assert config.num_frames == 1_100_000 and config.stddev_schedule == "linear(1.0,0.1,100000)"
    assert build_config({"task": "hopper_hop"}).num_frames == 3_100_000
    walker = build_config({"task": "walker_walk"})
    assert (walker.nstep, walker.batch_size) == (1, 512)
    assert build_config({"task": "walker_walk", "batch_size": 64}).batch_size == 64  # overrides win
    assert build_config({"task": "quadruped_run"}).replay_capacity == 100_000
    humanoid = build_config({"task": "humanoid_run"})
    assert (humanoid.lr, humanoid.feature_dim, humanoid.num_frames) == (8e-5, 100, 30_100_000)
    gym = build_config({"task": "Hopper-v5", "obs_type": "states"})
    assert (gym.action_repeat, gym.frame_stack) == (1, 1)
    plain = build_config({"task": "cartpole_swingup", "use_task_presets": False})
    assert plain.num_frames == FIELDS["num_frames"].default


def test_origin_has_no_mode_and_cli_values_are_typed():
    origin = build_config({"critic_norm": "none", "actor_norm": "none"})
    assert origin.bn_mode is None
    overrides, out = train.parse_cli(["lr=1e-3", "batch_size=64", "checkpoint_replay=false", "bn_mode=TTTTT",
                                      "stddev_schedule=0.2", "out=runs/x"])
    config = build_config(overrides)
    assert (config.lr, config.batch_size, config.checkpoint_replay) == (1e-3, 64, False)
    assert config.stddev_schedule == "0.2" and str(out) == "runs/x"


def test_help_lists_every_key_with_default_and_allowed_values(capsys):
    assert train.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name, field in FIELDS.items():
        assert f"{name} = {field.default!r}" in text
    assert "allowed: none, layer_norm, batch_norm" in text
