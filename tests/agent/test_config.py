"""Invalid configs fail before training, naming key, value and what is allowed."""

from __future__ import annotations

import pytest

from agent import train
from contract.config import FIELDS, ConfigError, build_config, identity_config

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
    ({"encoder_norm": "batch_norm", "obs_type": "states"}, ["encoder_norm", "batch_norm", "obs_type=states"]),
    ({"encoder_norm": "layer_norm"}, ["encoder_norm", "layer_norm", "none, batch_norm"]),
    ({"encoder_bn_passes": "by_step"}, ["encoder_bn_passes", "by_step", "encoder_norm=batch_norm"]),
    ({"encoder_bn_passes": "eval", "encoder_norm": "batch_norm"}, ["encoder_bn_passes", "eval", "train, by_step"]),
    (
        {"bn_mode": "TTETT", "actor_norm": "none", "critic_norm": "none", "encoder_norm": "batch_norm"},
        ["bn_mode", "encoder_bn_passes=by_step", "absent"],
    ),
    ({"q_bias_bn_stats": "running"}, ["q_bias_bn_stats", "running", "update, eval_batch"]),
    ({"q_bias_augment": True, "obs_type": "states"}, ["q_bias_augment", "pixel", "obs_type=states"]),
    ({"q_bias_every_frames": -2}, ["q_bias_every_frames", "-2", ">= 0"]),
    ({"q_bias_episodes": 0}, ["q_bias_episodes", ">= 1"]),
    ({"q_bias_every_frames": 2000, "eval_every_frames": 0}, ["q_bias_every_frames", "2000", "eval_every_frames > 0"]),
    ({"task_presets": "paper"}, ["task_presets", "paper", "drqv2, ma_bn"]),
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


def test_ma_bn_presets_follow_the_authors_task_configs():
    """Their cfgs/task: easy 5.1M frames, std over 100k agent steps; every other task `medhard`: 10.1M over 1M.
    The per-task keys stay DrQ-v2's; Gymnasium is unchanged."""
    hopper = build_config({"task": "hopper_hop", "task_presets": "ma_bn"})
    assert (hopper.num_frames, hopper.stddev_schedule) == (10_100_000, "linear(1.0,0.1,1000000)")
    easy = build_config({"task": "cartpole_swingup", "task_presets": "ma_bn"})
    assert (easy.num_frames, easy.stddev_schedule) == (5_100_000, "linear(1.0,0.1,100000)")
    humanoid = build_config({"task": "humanoid_run", "task_presets": "ma_bn"})
    assert (humanoid.num_frames, humanoid.stddev_schedule, humanoid.lr) == (10_100_000, "linear(1.0,0.1,1000000)", 8e-5)
    walker = build_config({"task": "walker_run", "task_presets": "ma_bn"})
    assert (walker.num_frames, walker.nstep, walker.batch_size) == (10_100_000, 1, 512)
    assert build_config({"task": "hopper_hop", "task_presets": "ma_bn", "num_frames": 50_000}).num_frames == 50_000
    gym = build_config({"task": "Hopper-v5", "obs_type": "states", "task_presets": "ma_bn"})
    assert gym.num_frames == build_config({"task": "Hopper-v5", "obs_type": "states"}).num_frames


def test_new_keys_leave_ids_alone_only_where_they_reproduce_the_old_trial():
    """A stored trial's id survives a new key only at the value that computes and measures what it did."""

    def keys(**overrides):
        return set(identity_config(build_config(overrides).to_dict()))

    new_keys = {
        "task_presets",
        "encoder_norm",
        "encoder_bn_passes",
        "q_bias_bn_stats",
        "q_bias_every_frames",
        "q_bias_episodes",
        "q_bias_augment",
        "critic_i_stats",
        "renorm_r_max",
        "renorm_d_max",
        "renorm_warmup_steps",
    }
    assert not keys() & new_keys  # the default (MA-BN: Critic-I = E reads running statistics either way)
    assert not keys(critic_norm="none", actor_norm="none") & new_keys  # Origin
    assert not keys(bn_mode="TTTTT", q_bias_bn_stats="eval_batch") & new_keys  # Critic-I = T, measured as before
    assert keys(bn_mode="TTTTT") & new_keys == {"q_bias_bn_stats"}  # ... measured the authors' way: a new trial
    assert "task_presets" in keys(task_presets="ma_bn")
    assert {"encoder_norm", "encoder_bn_passes"} <= keys(encoder_norm="batch_norm", encoder_bn_passes="by_step")
    assert {"q_bias_every_frames", "q_bias_augment"} <= keys(q_bias_every_frames=2000, q_bias_augment=True)


def test_origin_has_no_mode_and_cli_values_are_typed():
    origin = build_config({"critic_norm": "none", "actor_norm": "none"})
    assert origin.bn_mode is None
    overrides, out = train.parse_cli(
        ["lr=1e-3", "batch_size=64", "checkpoint_replay=false", "bn_mode=TTTTT", "stddev_schedule=0.2", "out=runs/x"]
    )
    config = build_config(overrides)
    assert (config.lr, config.batch_size, config.checkpoint_replay) == (1e-3, 64, False)
    assert config.stddev_schedule == "0.2" and str(out) == "runs/x"


def test_help_lists_every_key_with_default_and_allowed_values(capsys):
    assert train.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name, field in FIELDS.items():
        assert f"{name} = {field.default!r}" in text
    assert "allowed: none, layer_norm, batch_norm" in text
    assert "allowed: update, eval_batch" in text  # both Q-bias readings, named
