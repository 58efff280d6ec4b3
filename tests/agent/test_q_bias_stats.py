"""The Q-bias pass normalizes Critic-I as the authors' ``cal_est_bias`` does (q_bias_bn_stats=update), or with the
evaluation batch's own statistics (eval_batch); Critic-I = E reads running statistics under both.

A hand-built critic (tiny widths, every weight and statistic set here) whose update statistics, evaluation batch
and running statistics all differ is evaluated by the agent and by plain torch ops written out below, alone (a
pack of one: rows layout) and inside a mixed-mode pack (features-first layout).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from agent import checkpoint, metrics
from agent.bn_modes import bn_layers
from agent.drqv2 import DrQV2Agent
from agent.networks import features_first
from agent.train import run_trial
from contract.config import build_config
from tests.agent.conftest import packed
from tests.agent.test_train import TINY_STATES, comparable, read_metrics

OBS_DIM, ACTION_DIM, FEATURES, HIDDEN = 3, 1, 2, 4
EPS = 1e-5


def _agent(tiny_config, modes: list[str], how: str) -> DrQV2Agent:
    configs = [
        tiny_config(
            actor_norm="none",
            critic_norm="batch_norm",
            bn_mode=mode,
            seed=k + 1,
            hidden_dim=HIDDEN,
            feature_dim=FEATURES,
            q_bias_bn_stats=how,
        )
        for k, mode in enumerate(modes)
    ]
    return DrQV2Agent(configs, (OBS_DIM,), ACTION_DIM, torch.device("cpu"))


def _set_by_hand(agent: DrQV2Agent) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every critic weight, affine BN parameter and running statistic set from a fixed stream, each member its
    own; returns the 'update' statistics (per BN layer, (K, HIDDEN) mean and variance), loaded as a checkpoint
    would load them. Variances lie in [0.5, 2.5] so each of the three readings normalizes differently."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for param in agent.critic.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.8)
        for layer in bn_layers(agent.critic):
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=g))
            layer.running_var.copy_(0.5 + 2 * torch.rand(layer.running_var.shape, generator=g))
    saved = [
        (torch.randn(layer.running_mean.shape, generator=g), 0.5 + 2 * torch.rand(layer.running_var.shape, generator=g))
        for layer in bn_layers(agent.critic)
    ]
    for k in range(agent.k):
        agent.load_member_state_dict(k, {"critic_i_stats": [(mean[k], var[k]) for mean, var in saved]})
    return saved


@torch.no_grad()
def _hand_q(
    agent: DrQV2Agent,
    k: int,
    obs: torch.Tensor,
    action: torch.Tensor,
    reading: str,
    saved: list[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """min(Q1, Q2) of member k written out with plain ops; ``reading``: update | eval_batch | running."""
    critic = agent.critic
    y = obs @ critic.trunk[0].weight[k].T + critic.trunk[0].bias[k]
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + EPS)
    h = torch.tanh(y * critic.trunk[1].weight[k] + critic.trunk[1].bias[k])
    x0 = torch.cat([h, action], dim=-1)
    bn_index = 0
    qs = []
    for head in (critic.q1, critic.q2):
        x = x0
        for i in (0, 3):
            linear, bn = head[i], head[i + 1]
            z = x @ linear.weight[k].T + linear.bias[k]
            if reading == "update":
                mean, var = saved[bn_index][0][k], saved[bn_index][1][k]
            elif reading == "eval_batch":
                mean, var = z.mean(0), z.var(0, unbiased=False)
            else:
                mean, var = bn.running_mean[k], bn.running_var[k]
            x = torch.relu((z - mean) / torch.sqrt(var + EPS) * bn.weight[k] + bn.bias[k])
            bn_index += 1
        qs.append(x @ head[6].weight[k].T + head[6].bias[k])
    return torch.min(*qs).squeeze(-1)


@pytest.mark.parametrize("how", ["update", "eval_batch"])
@pytest.mark.parametrize(
    "modes", [["TTTTT"], ["TTETT"], ["TTTTT", "TTETT", "ETTEE"]], ids=["alone-T", "alone-E", "mixed-pack"]
)
def test_q_bias_reads_update_eval_batch_or_running_statistics(modes, how, float64, tiny_config):
    agent = _agent(tiny_config, modes, how)
    saved = _set_by_hand(agent)
    g = torch.Generator().manual_seed(7)
    obs = [torch.randn(5 + k, OBS_DIM, generator=g) for k in range(len(modes))]  # members bring different counts
    actions = [torch.rand(5 + k, ACTION_DIM, generator=g) * 2 - 1 for k in range(len(modes))]
    running_before = [layer.running_mean.clone() for layer in bn_layers(agent.critic)]

    got = agent.q_values([o.numpy() for o in obs], [a.numpy() for a in actions])

    for k, mode in enumerate(modes):
        expected = {
            reading: _hand_q(agent, k, obs[k], actions[k], reading, saved)
            for reading in ("update", "eval_batch", "running")
        }
        # The three readings really differ here, so matching one of them means something.
        assert (
            min(
                (expected[a] - expected[b]).abs().max()
                for a, b in (("update", "eval_batch"), ("update", "running"), ("eval_batch", "running"))
            )
            > 1e-3
        )
        reading = "running" if mode[2] == "E" else how
        np.testing.assert_allclose(
            got[k],
            expected[reading].numpy(),
            rtol=1e-10,
            atol=1e-10,
            err_msg=f"member {k} ({mode}, q_bias_bn_stats={how}) should read {reading}",
        )
    # A measurement never moves running statistics, and the saved ones stay what they were.
    assert all(torch.equal(b, layer.running_mean) for b, layer in zip(running_before, bn_layers(agent.critic)))
    assert all(torch.equal(s[0], a[0]) for s, a in zip(saved, agent.critic_i_statistics()))


@pytest.mark.parametrize("modes", [["TTTTT"], ["TTTTT", "TTETT", "ETTEE"]], ids=["alone", "mixed-pack"])
def test_an_update_saves_the_statistics_of_its_critic_i_forward(modes, state_batch, tiny_config):
    """The saved statistics are the batch mean and biased variance each critic BN layer saw in Critic-I (the
    forward that records them), replay rows of buffer mixing included; a checkpoint carries them."""
    configs = [
        tiny_config(bn_mode=mode, seed=k + 1, buffer_mix_ratio=0.5, allow_mix_in_eval_mode=True)
        for k, mode in enumerate(modes)
    ]
    agent = DrQV2Agent(configs, (5,), 1, torch.device("cpu"))
    seen: dict[int, torch.Tensor] = {}

    def hook(layer, inputs):
        if layer.record_batch_stats:
            seen[id(layer)] = inputs[0].detach().clone()

    layers = bn_layers(agent.critic)
    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    agent.update(packed(state_batch, len(modes)), step=1000).read()
    for handle in handles:
        handle.remove()
    stats = agent.critic_i_statistics()
    for layer, (mean, var) in zip(layers, stats):
        x = seen[id(layer)]
        per_row = x.transpose(1, 2) if features_first(len(modes)) else x  # (K, N, width)
        assert per_row.shape[1] == configs[0].batch_size + configs[0].mix_rows
        torch.testing.assert_close(mean, per_row.mean(dim=1))
        torch.testing.assert_close(var, per_row.var(dim=1, unbiased=False))

    resumed = DrQV2Agent(configs[0], (5,), 1, torch.device("cpu"))
    resumed.load_member_state_dict(0, agent.member_state_dict(0))
    for (mean, var), (mean_r, var_r) in zip(stats, resumed.critic_i_statistics()):
        torch.testing.assert_close(mean_r[0], mean[0])
        torch.testing.assert_close(var_r[0], var[0])
    obs, action = state_batch["obs"][:6], state_batch["action"][:6]
    np.testing.assert_allclose(
        resumed.q_values([obs], [action])[0],
        agent.q_values([obs] * len(modes), [action] * len(modes))[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_no_update_statistics_yet_leaves_only_those_members_unmeasured(state_batch, tiny_config):
    agent = DrQV2Agent(
        [
            tiny_config(bn_mode="TTTTT"),
            tiny_config(bn_mode="TTETT", seed=2),
            tiny_config(bn_mode="TTTTT", seed=3, q_bias_bn_stats="update"),
        ],
        (5,),
        1,
        torch.device("cpu"),
    )
    obs, action = state_batch["obs"][:6], state_batch["action"][:6]
    before = agent.q_values([obs] * 3, [action] * 3)
    assert before[0] is None and before[2] is None and before[1] is not None  # Critic-I = E: running statistics
    agent.update(packed(state_batch, 3), step=1000).read()
    assert all(q is not None and np.isfinite(q).all() for q in agent.q_values([obs] * 3, [action] * 3))


def test_a_checkpoint_without_critic_i_statistics_upgrades_to_unmeasured_members(tiny_config):
    """Checkpoints from before the statistics were kept: outdated; upgraded, each member resumes without them (NaN,
    as before its first update) and its running statistics as saved."""
    agent = _agent(tiny_config, ["TTTTT", "EEEEE"], "update")
    _set_by_hand(agent)
    old = {key: value for key, value in agent.member_state_dict(1).items() if key != "critic_i_stats"}
    assert "no Critic-I statistics" in checkpoint.outdated({"agent": old})
    upgraded = checkpoint.upgrade_agent_state(old)
    resumed = _agent(tiny_config, ["TTTTT", "EEEEE"], "update")
    resumed.load_member_state_dict(1, upgraded)
    stats = resumed.critic_i_statistics()
    assert stats is not None and all(torch.isnan(mean[1]).all() and torch.isnan(var[1]).all() for mean, var in stats)
    for layer, saved in zip(bn_layers(resumed.critic), bn_layers(agent.critic)):
        torch.testing.assert_close(layer.running_mean[1], saved.running_mean[1])


def test_augmented_q_bias_pass_uses_its_own_random_stream(tiny_config):
    config = tiny_config(obs_type="pixels", critic_norm="batch_norm", actor_norm="batch_norm")
    agent = DrQV2Agent(config, (9, 24, 24), 1, torch.device("cpu"))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (6, 9, 24, 24), dtype=np.uint8)
    action = rng.uniform(-1, 1, (6, 1)).astype(np.float32)
    stream = agent.generators[0].get_state()
    plain = agent.q_values([obs], [action])[0]
    shifted = agent.q_values([obs], [action], augment_seeds=[5])[0]
    assert torch.equal(agent.generators[0].get_state(), stream)  # training's stream drew nothing
    np.testing.assert_array_equal(shifted, agent.q_values([obs], [action], augment_seeds=[5])[0])
    assert not np.allclose(shifted, plain)


def test_own_measurements_are_averaged_into_each_evaluation_row(tmp_path, monkeypatch):
    """q_bias_every_frames > 0: a measurement of its own every N frames once updates have begun; each evaluation
    row reports the mean of the (mean, std) pairs measured since the previous row (the authors' averaging)."""
    measured: list[tuple[float, float]] = []
    original = metrics.q_bias

    def spy(q_values, mc_returns):
        measured.append(original(q_values, mc_returns))
        return measured[-1]

    monkeypatch.setattr(metrics, "q_bias", spy)
    config = build_config(
        {
            **TINY_STATES,
            "num_frames": 2000,
            "bn_mode": "TTTTT",
            "q_bias_every_frames": 500,
            "q_bias_episodes": 3,
            "checkpoint_every_frames": 0,
        }
    )
    assert run_trial(config, tmp_path).state == "completed"
    evals = read_metrics(tmp_path).dropna(subset=["eval/episode_return"])
    assert list(evals["frame"]) == [0, 1000, 2000]
    assert len(measured) == 3  # at frames 500, 1000 (after that frame's evaluation) and 1500
    assert np.isnan(evals["q_bias/mean"].iloc[0])  # nothing measured before the first row
    for row, window in ((1, measured[:1]), (2, measured[1:])):
        assert evals["q_bias/mean"].iloc[row] == pytest.approx(np.mean([b[0] for b in window]), rel=1e-6)
        assert evals["q_bias/std"].iloc[row] == pytest.approx(np.mean([b[1] for b in window]), rel=1e-6)


class _StopAtFirstCheckpoint:
    """A sink that ends the trial as Ray ends one (SystemExit) right after its first checkpoint is written."""

    def log(self, frame, metrics):
        pass

    def checkpoint(self, frame, path):
        raise SystemExit(0)

    def close(self, status):
        pass


def test_a_trial_stopped_between_measurement_and_report_resumes_exactly(tmp_path):
    """The measurements awaiting their evaluation row and the update's Critic-I statistics are in the checkpoint."""
    config = build_config(
        {**TINY_STATES, "num_frames": 2000, "bn_mode": "TTTTT", "q_bias_every_frames": 500, "q_bias_episodes": 2}
    )
    run_trial(config, tmp_path / "whole")
    with pytest.raises(SystemExit):  # at frame 1000: the measurement of frame 500 is not reported yet
        run_trial(config, tmp_path / "stopped", sinks=[_StopAtFirstCheckpoint()])
    assert run_trial(config, tmp_path / "stopped").state == "completed"
    whole, resumed = (comparable(read_metrics(tmp_path / name)) for name in ("whole", "stopped"))
    pd.testing.assert_frame_equal(resumed, whole)
    assert resumed.dropna(subset=["eval/episode_return"])["q_bias/mean"].notna().sum() == 2
