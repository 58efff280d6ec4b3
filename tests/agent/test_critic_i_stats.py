"""Critic-I's statistics sources (``critic_i_stats``, method.md §3): the Critic-I forward of each source against
plain torch ops written out below (values, the actor's gradient through the actions, the running statistics and
what the Q-bias reading keeps), alone and with every source as a member of one mixed pack; through whole updates
a mixed pack learns what each member learns alone; the config says where the key applies and keeps ids."""

from __future__ import annotations

import pytest
import torch

from agent.bn_modes import bn_critic_i, bn_layers
from agent.drqv2 import DrQV2Agent
from agent.networks import PackedBatchNorm1d
from contract.config import PACK_MEMBER_KEYS, ConfigError, build_config, identity_config
from tests.agent.test_packing import TOLERANCE, _batches

OBS_DIM, ACTION_DIM, FEATURES, HIDDEN, ROWS = 3, 1, 2, 4, 6
EPS, MOMENTUM = 1e-5, 0.1
# (mode string, source): each T source, and a Critic-I = E member beside them.
MEMBERS = [
    ("TTTTT", "mode"),
    ("TTTTT", "batch_stopgrad"),
    ("TTTTT", "replay_batch"),
    ("TTTTT", "running_noisy"),
    ("TTETT", "mode"),
]


def _agent(tiny_config, members) -> DrQV2Agent:
    configs = [
        tiny_config(
            actor_norm="none",
            bn_mode=mode,
            critic_i_stats=source,
            seed=k + 1,
            hidden_dim=HIDDEN,
            feature_dim=FEATURES,
        )
        for k, (mode, source) in enumerate(members)
    ]
    agent = DrQV2Agent(configs, (OBS_DIM,), ACTION_DIM, torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    # The same weights and running statistics (far from a batch's) for every member in any pack: members then
    # differ by their sources alone.
    with torch.no_grad():
        for param in agent.critic.parameters():
            param.copy_(torch.randn(param.shape[1:], generator=g) * 0.8)
        for layer in bn_layers(agent.critic):
            layer.bias.add_(1.0)  # most units alive after the ReLU in every reading, so the readings differ
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape[1:], generator=g))
            layer.running_var.copy_(0.5 + 2 * torch.rand(layer.running_var.shape[1:], generator=g))
    return agent


def _hand_critic_i(critic, k, obs, policy_action, replay_action, train: bool, source: str):
    """Member k's min(Q1, Q2) on (s, pi(s)), written out, and per BN layer (normalizing mean, var, running mean and
    var afterwards)."""
    y = obs @ critic.trunk[0].weight[k].T + critic.trunk[0].bias[k]
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + EPS)
    h = torch.tanh(y * critic.trunk[1].weight[k] + critic.trunk[1].bias[k])
    qs, layers = [], []
    for head in (critic.q1, critic.q2):
        policy, replay = torch.cat([h, policy_action], -1), torch.cat([h, replay_action], -1)
        for i in (0, 3):
            linear, bn = head[i], head[i + 1]
            z_policy = policy @ linear.weight[k].T + linear.bias[k]
            z_replay = replay @ linear.weight[k].T + linear.bias[k]
            running = (bn.running_mean[k].clone(), bn.running_var[k].clone())
            if not train:
                mean, var = running
                after = running
            elif source == "running_noisy":  # the two halves' statistics, as independent batches
                half_a, half_b = z_policy[: ROWS // 2].detach(), z_policy[ROWS // 2 :].detach()
                mean = running[0] + (half_a.mean(0) - half_b.mean(0)) / 2
                ratio = (half_a.var(0, unbiased=False) + EPS) / (half_b.var(0, unbiased=False) + EPS)
                var = running[1] * torch.sqrt(ratio)
                after = running
            else:
                source_rows = z_replay if source == "replay_batch" else z_policy
                mean, var = source_rows.mean(0), source_rows.var(0, unbiased=False)
                if source == "batch_stopgrad":
                    mean, var = mean.detach(), var.detach()
                unbiased = var.detach() * ROWS / (ROWS - 1)
                after = (0.9 * running[0] + 0.1 * mean.detach(), 0.9 * running[1] + 0.1 * unbiased)
            layers.append((mean.detach(), var.detach(), *after))

            def norm(z, mean=mean, var=var, bn=bn):
                return torch.relu((z - mean) / torch.sqrt(var + EPS) * bn.weight[k] + bn.bias[k])

            policy, replay = norm(z_policy), norm(z_replay)
        qs.append(policy @ head[6].weight[k].T + head[6].bias[k])
    return torch.min(*qs), layers


def _critic_i(agent, obs, policy_action, replay_action):
    """The agent's Critic-I forward as ``update_actor`` runs it: its Q on the policy rows, the gradient of their sum
    with respect to the policy actions, and per BN layer (recorded statistics, running mean and var)."""
    with_replay = "replay_batch" in agent.critic_i_stats
    rows = torch.cat([obs, obs], 1) if with_replay else obs
    actions = torch.cat([policy_action, replay_action], 1) if with_replay else policy_action
    actions = actions.detach().requires_grad_(True)
    layers = bn_layers(agent.critic)
    for layer in layers:
        layer.record_batch_stats = True
    with bn_critic_i(agent.critic, agent.modes, agent.critic_i_stats, ROWS if with_replay else None):
        q1, q2 = agent.critic(rows, actions)
    for layer in layers:
        layer.record_batch_stats = False
    q = torch.min(q1, q2)[:, :ROWS]
    q.sum().backward()
    stats = [(*layer.batch_stats(), layer.running_mean, layer.running_var) for layer in layers]
    return q.detach(), actions.grad[:, :ROWS], stats


@pytest.mark.parametrize("packing", ["alone", "mixed-pack"])
def test_each_statistics_source_computes_its_written_out_critic_i(packing, float64, tiny_config):
    groups = [[member] for member in MEMBERS] if packing == "alone" else [MEMBERS]
    g = torch.Generator().manual_seed(9)
    obs = torch.randn(ROWS, OBS_DIM, generator=g)
    policy_action = torch.rand(ROWS, ACTION_DIM, generator=g) * 2 - 1
    replay_action = torch.rand(ROWS, ACTION_DIM, generator=g) * 2 - 1
    results = {}
    for group in groups:
        agent = _agent(tiny_config, group)
        k = len(group)
        expected = []
        for m, (mode, source) in enumerate(group):  # written out before the forward moves running statistics
            action = policy_action.clone().requires_grad_(True)
            q, layers = _hand_critic_i(agent.critic, m, obs, action, replay_action, mode[2] == "T", source)
            q.sum().backward()
            expected.append((q.detach(), action.grad, layers))
        got_q, got_grad, got_layers = _critic_i(
            agent, obs.expand(k, -1, -1), *(a.expand(k, -1, -1) for a in (policy_action, replay_action))
        )
        for m, member in enumerate(group):
            q, grad, layers = expected[m]
            torch.testing.assert_close(got_q[m], q)
            torch.testing.assert_close(got_grad[m], grad)
            for (mean, var, run_mean, run_var), (hand_mean, hand_var, hand_run_mean, hand_run_var) in zip(
                got_layers, layers
            ):
                torch.testing.assert_close(run_mean[m], hand_run_mean)
                torch.testing.assert_close(run_var[m], hand_run_var)
                if member[0][2] == "T":  # the Q-bias reading keeps what a T member normalized with
                    torch.testing.assert_close(mean[m], hand_mean)
                    torch.testing.assert_close(var[m], hand_var)
            results[member] = (q, grad)
    # The sources really differ, so matching each means something: stopping the gradient keeps the values and
    # changes the gradient; the replay batch's statistics and the noise change them.
    mode, stopgrad, replay, noisy, eval_mode = (results[member] for member in MEMBERS)
    torch.testing.assert_close(stopgrad[0], mode[0])
    assert not torch.allclose(stopgrad[1], mode[1], rtol=1e-3, atol=1e-6)
    assert not torch.allclose(replay[0], mode[0], rtol=1e-3, atol=1e-6)
    assert not torch.allclose(noisy[0], eval_mode[0], rtol=1e-3, atol=1e-6)


def test_a_pack_of_every_source_learns_what_each_learns_alone(float64, tiny_config):
    configs = [
        # One seed for all: members that start alike and see the same batches part only by their sources.
        tiny_config(bn_mode=mode, critic_i_stats=source, seed=1, lr=1e-3)
        for mode, source in MEMBERS
    ]
    cpu = torch.device("cpu")
    pack = DrQV2Agent(configs, (5,), 1, cpu)
    alone = [DrQV2Agent(config, (5,), 1, cpu) for config in configs]
    for i, batch in enumerate(_batches("states", len(configs), 8, 10)):
        packed_metrics = pack.update(batch, step=1000 + i).read()
        for k, agent in enumerate(alone):
            single = agent.update({key: value[k : k + 1] for key, value in batch.items()}, step=1000 + i).read()
            for name, values in single.items():
                if not name.startswith("perf/"):
                    assert packed_metrics[name][k] == pytest.approx(values[0], rel=TOLERANCE, abs=TOLERANCE), name
    for k, agent in enumerate(alone):
        in_pack, by_itself = pack.member_state_dict(k), agent.member_state_dict(0)
        for net in ("actor", "critic", "critic_target"):
            for key, value in by_itself[net].items():
                torch.testing.assert_close(in_pack[net][key], value, rtol=TOLERANCE, atol=TOLERANCE)
        for (mean, var), (own_mean, own_var) in zip(in_pack["critic_i_stats"], by_itself["critic_i_stats"]):
            torch.testing.assert_close(mean, own_mean, rtol=TOLERANCE, atol=TOLERANCE)
            torch.testing.assert_close(var, own_var, rtol=TOLERANCE, atol=TOLERANCE)
    # The sources train differently: the actors part ways.
    actors = [agent.member_state_dict(0)["actor"]["policy.0.weight"] for agent in alone]
    assert all(not torch.allclose(actors[0], other) for other in actors[1:])


def test_running_noisy_has_the_batch_statistics_noise_without_their_mismatch(float64):
    """Over many batches from a distribution far from the running statistics: the batch mean sits about its
    expectation (the mismatch) with spread sigma / sqrt(N); running_noisy's mean sits about the running mean with the
    same spread, and its variance's log-spread is the batch variance's."""
    width, rows, draws = 3, 16, 4000
    layer = PackedBatchNorm1d(2, width)
    layer.member_train, layer.member_stats, layer.record_batch_stats = (True, True), ("mode", "running_noisy"), True
    g = torch.Generator().manual_seed(3)
    centre, scale = torch.tensor([3.0, -1.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    kept = []
    for _ in range(draws):
        with torch.no_grad():
            layer.running_mean.zero_()
            layer.running_var.fill_(1.0)
            rows_x = centre + scale * torch.randn(rows, width, generator=g)
            layer(rows_x.t().expand(2, -1, -1).contiguous())
        kept.append(layer.batch_stats())
    means = torch.stack([mean for mean, _ in kept])  # (draws, 2, width)
    log_vars = torch.stack([var for _, var in kept]).log()
    batch_mean, noisy_mean = means[:, 0], means[:, 1]
    se = scale / rows**0.5
    torch.testing.assert_close(batch_mean.mean(0), centre, atol=float(4 * se.max() / draws**0.5), rtol=0)
    torch.testing.assert_close(noisy_mean.mean(0), torch.zeros(width), atol=float(4 * se.max() / draws**0.5), rtol=0)
    torch.testing.assert_close(noisy_mean.std(0), se, rtol=0.06, atol=0)
    torch.testing.assert_close(batch_mean.std(0), se, rtol=0.06, atol=0)
    batch_log_spread = (log_vars[:, 0] - 2 * scale.log()).std(0)
    torch.testing.assert_close(log_vars[:, 1].std(0), batch_log_spread, rtol=0.15, atol=0)
    assert log_vars[:, 1].mean(0).abs().max() < 0.02  # about the running variance (1), in log space


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"critic_norm": "layer_norm"}, "needs critic_norm=batch_norm or batch_renorm"),
        ({"bn_mode": "TTETT"}, "Critic-I = E"),
        ({"bn_mode": "TTTTT", "critic_i_stats": "replay_batch", "buffer_mix_ratio": 0.5}, "use buffer_mix_ratio=0"),
        ({"critic_i_stats": "running"}, "critic_i_stats='running'"),
        ({"bn_mode": "TTTTT", "critic_i_stats": "running_noisy", "buffer_mix_ratio": 1}, "use buffer_mix_ratio=0"),
        ({"bn_mode": "TTTTT", "critic_i_stats": "running_noisy", "batch_size": 3}, "batch_size >= 4"),
    ],
)
def test_critic_i_stats_is_refused_where_it_cannot_apply(overrides, words):
    with pytest.raises(ConfigError, match=words):
        build_config({"critic_i_stats": "batch_stopgrad", **overrides})


def test_critic_i_stats_is_a_member_key_and_enters_ids_only_away_from_its_default():
    assert "critic_i_stats" in PACK_MEMBER_KEYS
    assert "critic_i_stats" not in identity_config(build_config({"bn_mode": "TTTTT"}).to_dict())
    for source in ("batch_stopgrad", "replay_batch", "running_noisy"):
        config = build_config({"bn_mode": "TTTTT", "critic_i_stats": source})
        assert identity_config(config.to_dict())["critic_i_stats"] == source
    # Buffer mixing combines with the stop-gradient source (its rows join the forward's own statistics).
    assert build_config({"bn_mode": "TTTTT", "critic_i_stats": "batch_stopgrad", "buffer_mix_ratio": 0.5}).mix_rows
    assert build_config({"critic_norm": "batch_renorm", "bn_mode": "TTTTT", "critic_i_stats": "replay_batch"})
