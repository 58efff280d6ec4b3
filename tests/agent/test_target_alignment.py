"""Target-statistics alignment (method.md §5): ``target_bn_stats=recalibrate`` and the CrossQ-style critic
(``critic_target=none``) against forwards written out with plain torch ops in float64; a pack mixing recalibrate
with the other target statistics learns what each member learns alone; the config's rules and ids; real trials."""

from __future__ import annotations

import copy

import pytest
import torch

from agent.bn_modes import bn_layers
from agent.drqv2 import DrQV2Agent
from agent.train import run_trial
from contract.config import ConfigError, build_config, identity_config
from tests.agent.test_packing import TOLERANCE, _batches
from tests.agent.test_train import TINY_STATES, read_metrics

EPS = 1e-5
ROWS = 8
CPU = torch.device("cpu")


def _hand_critic(critic, k, obs, action):
    """Member k's Q1 and Q2 on (obs, action) with every BN layer on the rows' own batch statistics (train mode),
    and per BN layer, in ``bn_layers`` order, the (mean, biased variance) of its input."""
    trunk = obs @ critic.trunk[0].weight[k].T + critic.trunk[0].bias[k]
    trunk = (trunk - trunk.mean(-1, keepdim=True)) / torch.sqrt(trunk.var(-1, unbiased=False, keepdim=True) + EPS)
    h = torch.cat([torch.tanh(trunk * critic.trunk[1].weight[k] + critic.trunk[1].bias[k]), action], -1)
    qs, layers = [], []
    for head in (critic.q1, critic.q2):
        z = h
        for i in (0, 3):
            linear, bn = head[i], head[i + 1]
            z = z @ linear.weight[k].T + linear.bias[k]
            mean, var = z.mean(0), z.var(0, unbiased=False)
            layers.append((mean, var))
            z = torch.relu((z - mean) / torch.sqrt(var + EPS) * bn.weight[k] + bn.bias[k])
        qs.append(z @ head[6].weight[k].T + head[6].bias[k])
    return qs[0], qs[1], layers


def _first_forward_inputs(module):
    """The (obs, action) of ``module``'s first forward from now on, as a list filled by a hook; and the hook."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(mod, inp, out):
        if not seen:
            seen.append((inp[0].detach().clone(), inp[1].detach().clone()))

    return seen, module.register_forward_hook(keep)


# Batch Renormalization at its full bounds from the start: recalibration must still read plain batch statistics.
@pytest.mark.parametrize(
    "norm", [{"critic_norm": "batch_norm"}, {"critic_norm": "batch_renorm", "renorm_warmup_steps": 0}]
)
def test_recalibrate_gives_the_target_the_statistics_of_its_own_forward_at_its_new_weights(norm, float64, tiny_config):
    # Critic-III = E: the target critic never runs on batch statistics, so only recalibration sets its statistics.
    config = tiny_config(bn_mode="TTTTE", target_bn_stats="recalibrate", critic_target_tau=0.25, **norm)
    agent = DrQV2Agent(config, (5,), 1, CPU)
    batches = _batches("states", 1, ROWS, 3)
    for i, batch in enumerate(batches[:-1]):
        agent.update(batch, step=1000 + i).read()
    seen, hook = _first_forward_inputs(agent.critic_target)
    agent.update(batches[-1], step=1002).read()
    hook.remove()
    next_obs, next_action = seen[0]
    assert torch.equal(next_obs[0], torch.as_tensor(batches[-1]["next_obs"][0]))
    _, _, expected = _hand_critic(agent.critic_target, 0, next_obs[0], next_action[0])  # the target's new weights
    online = bn_layers(agent.critic)
    for layer, online_layer, (mean, var) in zip(bn_layers(agent.critic_target), online, expected):
        torch.testing.assert_close(layer.running_mean[0], mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.running_var[0], var * ROWS / (ROWS - 1), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(layer.running_mean, online_layer.running_mean)  # not the online statistics
        assert layer.num_batches_tracked.eq(0).all()  # the recalibrating forward moved nothing itself


def test_recalibrate_copy_soft_and_independent_members_of_a_pack_each_learn_what_they_learn_alone(float64, tiny_config):
    members = [
        dict(seed=1, bn_mode="TTTTE", target_bn_stats="recalibrate", lr=1e-3),
        dict(seed=2, bn_mode="TTETE", target_bn_stats="copy", lr=2e-3),
        dict(seed=3, bn_mode="TTETE", target_bn_stats="independent", lr=1e-3),
        dict(seed=4, bn_mode="TTTTE", target_bn_stats="soft", lr=3e-3),
    ]
    configs = [tiny_config(critic_target_tau=0.2, **member) for member in members]
    pack = DrQV2Agent(configs, (5,), 1, CPU)
    alone = [DrQV2Agent(config, (5,), 1, CPU) for config in configs]
    for i, batch in enumerate(_batches("states", len(configs), ROWS, 5)):
        packed_metrics = pack.update(batch, step=1000 + i).read()
        for k, agent in enumerate(alone):
            single = agent.update({key: value[k : k + 1] for key, value in batch.items()}, step=1000 + i).read()
            for name, values in single.items():
                if not name.startswith("perf/"):
                    assert packed_metrics[name][k] == pytest.approx(values[0], rel=TOLERANCE, abs=TOLERANCE)
    for k, agent in enumerate(alone):
        in_pack, by_itself = pack.member_state_dict(k), agent.member_state_dict(0)
        for net in ("actor", "critic", "critic_target"):
            for key, value in by_itself[net].items():
                torch.testing.assert_close(
                    in_pack[net][key], value, rtol=TOLERANCE, atol=TOLERANCE, msg=f"member {k} {net}.{key}"
                )
    # Each way of following left the target statistics somewhere else.
    target_means = bn_layers(pack.critic_target)[0].running_mean
    assert target_means[2].eq(0).all()  # independent, Critic-III = E: never moved
    assert not torch.allclose(target_means[0], target_means[1]) and not target_means[0].eq(0).all()


def test_critic_target_none_trains_on_one_joint_forward_with_the_target_detached(float64, tiny_config):
    config = tiny_config(bn_mode="TTTTT", critic_target="none")
    agent = DrQV2Agent(config, (5,), 1, CPU)
    batch = _batches("states", 1, ROWS, 1)[0]
    critic_before, target_before = copy.deepcopy(agent.critic), copy.deepcopy(agent.critic_target.state_dict())
    seen, hook = _first_forward_inputs(agent.critic)
    loss = agent.update(batch, step=1000).read()["losses/critic"][0]
    hook.remove()
    obs, action = seen[0][0][0], seen[0][1][0]
    assert obs.shape[0] == 2 * ROWS  # (s, a) then (s', a') in one forward
    assert torch.equal(obs[:ROWS], torch.as_tensor(batch["obs"][0]))
    assert torch.equal(obs[ROWS:], torch.as_tensor(batch["next_obs"][0]))
    assert torch.equal(action[:ROWS], torch.as_tensor(batch["action"][0]))
    q1, q2, _ = _hand_critic(critic_before, 0, obs, action)  # both halves normalized with the joint statistics
    reward, discount = (torch.as_tensor(batch[key][0]) for key in ("reward", "discount"))
    target = (reward + discount * torch.min(q1[ROWS:], q2[ROWS:])).detach()
    expected = (q1[:ROWS] - target).square().mean() + (q2[:ROWS] - target).square().mean()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-10)
    # The critic's gradient is the loss's with the TD target detached (the actor step leaves the critic's alone).
    expected.backward()
    for name, param in agent.critic.named_parameters():
        hand = dict(critic_before.named_parameters())[name].grad
        torch.testing.assert_close(param.grad, hand, rtol=1e-10, atol=1e-12, msg=name)
    # No target network: the kept target critic never moves.
    for key, value in agent.critic_target.state_dict().items():
        assert torch.equal(value, target_before[key]), key


def test_critic_target_none_refuses_what_has_no_meaning_without_a_target_and_keeps_ids():
    base = {**TINY_STATES, "critic_target": "none"}
    with pytest.raises(ConfigError, match="target_bn_stats='copy'.*no target critic"):
        build_config({**base, "target_bn_stats": "copy"})
    with pytest.raises(ConfigError, match="critic_target_tau=0.05.*no target network"):
        build_config({**base, "critic_target_tau": 0.05})
    with pytest.raises(ConfigError, match="Critic-III letter must equal the Critic-II letter"):
        build_config({**base, "bn_mode": "TTETE"})
    assert build_config({**base, "bn_mode": "TTTEE"}).critic_target == "none"
    assert build_config({**base, "critic_norm": "layer_norm", "bn_mode": "TTETE"}).critic_target == "none"
    with pytest.raises(ConfigError, match="critic_target='hard'"):
        build_config({"critic_target": "hard"})
    assert "critic_target" not in identity_config(build_config(TINY_STATES).to_dict())  # ids stored before it
    assert identity_config(build_config(base).to_dict())["critic_target"] == "none"
    recalibrated = identity_config(build_config({**TINY_STATES, "target_bn_stats": "recalibrate"}).to_dict())
    assert recalibrated["target_bn_stats"] == "recalibrate"


@pytest.mark.parametrize(
    "option",
    [{"target_bn_stats": "recalibrate", "bn_mode": "TTTTE"}, {"critic_target": "none"}],
    ids=["recalibrate", "critic-target-none"],
)
def test_trial_with_each_alignment_option_completes(option, tmp_path):
    status = run_trial(build_config({**TINY_STATES, "num_frames": 1000, **option}), tmp_path)
    assert status.state == "completed", status.traceback
    assert read_metrics(tmp_path)["losses/critic"].notna().any()
