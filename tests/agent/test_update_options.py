"""Buffer mixing (method.md §4), target BN statistics (method.md §5) and optimizers (method.md §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.bn_modes import bn_layers, bn_train_mode
from agent.optim import PackedOptimizer
from tests.agent.conftest import packed, scalar_metrics


def critic_i_rows(agent, batch) -> int:
    """Rows the online critic sees in its second forward of an update (Critic-I)."""
    seen: list[int] = []
    rows = lambda mod, inp, out: seen.append(inp[0].numel() // mod.weight.shape[2])  # noqa: E731 - any layout
    handle = agent.critic.q1[0].register_forward_hook(rows)
    agent.update(packed(batch), step=1000).read()
    handle.remove()
    assert len(seen) == 2  # Critic-II then Critic-I
    return seen[1]


@pytest.mark.parametrize("rho, expected_extra", [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8), (2.0, 16), (4.0, 32)])
def test_mixing_adds_floor_rho_b_replay_rows(rho, expected_extra, state_batch, make_agent, tiny_config):
    config = tiny_config(bn_mode="TTTTT", buffer_mix_ratio=rho)
    assert config.mix_rows == expected_extra == int(np.floor(rho * 8))
    batch = {k: v[: config.replay_rows_per_update] for k, v in state_batch.items()}
    assert len(batch["obs"]) == max(8, expected_extra)  # rho > 1 needs further sampled rows
    assert critic_i_rows(make_agent(config), batch) == 8 + expected_extra


def test_mixed_rows_are_the_replay_pairs(state_batch, make_agent, tiny_config):
    config = tiny_config(bn_mode="TTTTT", buffer_mix_ratio=0.5)
    agent = make_agent(config)
    captured = []
    handle = agent.critic.register_forward_hook(lambda mod, inp, out: captured.append(inp[1].detach().clone()))
    agent.update(packed(state_batch), step=1000).read()
    handle.remove()
    critic_i_actions = captured[1][0]
    assert torch.equal(critic_i_actions[8:], torch.as_tensor(state_batch["action"][:4]))


def test_actor_loss_uses_policy_rows_only(state_batch, make_agent, tiny_config):
    # With Critic-I in eval mode every row is normalized alone, so extra rows can
    # change the actor loss only if the loss reads them.
    losses = []
    for rho in (0.0, 1.0):
        agent = make_agent(tiny_config(bn_mode="TTETT", buffer_mix_ratio=rho, allow_mix_in_eval_mode=True))
        losses.append(scalar_metrics(agent.update(packed(state_batch), step=1000))["losses/actor"])
    # Equal up to float32 rounding: a batched matmul over 16 rows may block its sums unlike one over 8.
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    # In train mode the same extra rows shift the batch statistics, hence the loss.
    train_losses = []
    for rho in (0.0, 1.0):
        agent = make_agent(tiny_config(bn_mode="TTTTT", buffer_mix_ratio=rho))
        train_losses.append(scalar_metrics(agent.update(packed(state_batch), step=1000))["losses/actor"])
    assert train_losses[0] != pytest.approx(train_losses[1], rel=1e-3)


def _stats(layers):
    return [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]


@pytest.mark.parametrize("how", ["independent", "copy", "soft"])
def test_target_bn_statistics(how, state_batch, make_agent, tiny_config):
    agent = make_agent(tiny_config(bn_mode="TTTTT", target_bn_stats=how, critic_target_tau=0.25))
    batch = {k: torch.as_tensor(v[None, :8]) for k, v in state_batch.items()}
    # Move the online statistics away from the target's, then run only the target update.
    with torch.no_grad(), bn_train_mode(agent.critic, True):
        agent.critic(batch["obs"].float() * 3.0 + 1.0, batch["action"])
    online, target_before = _stats(bn_layers(agent.critic)), _stats(bn_layers(agent.critic_target))
    agent.update_target()
    target_after = _stats(bn_layers(agent.critic_target))
    for (on_m, on_v), (old_m, old_v), (new_m, new_v) in zip(online, target_before, target_after):
        assert not torch.allclose(on_m, old_m)
        if how == "independent":
            assert torch.equal(new_m, old_m) and torch.equal(new_v, old_v)
        elif how == "copy":
            assert torch.equal(new_m, on_m) and torch.equal(new_v, on_v)
        else:
            assert torch.allclose(new_m, 0.75 * old_m + 0.25 * on_m)
            assert torch.allclose(new_v, 0.75 * old_v + 0.25 * on_v)


def test_soft_update_covers_parameters(make_agent, tiny_config):
    agent = make_agent(tiny_config(critic_target_tau=0.25))
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in agent.critic_target.parameters()]
    agent.update_target()
    for old, online, new in zip(before, agent.critic.parameters(), agent.critic_target.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_optimizer_choice(optimizer, make_agent, tiny_config):
    extra = {"sgd_momentum": 0.9} if optimizer == "sgd" else {}
    agent = make_agent(tiny_config(optimizer=optimizer, lr=3e-3, critic_lr=1e-2, **extra))
    assert isinstance(agent.actor_opt, PackedOptimizer) and agent.actor_opt.kind == optimizer
    actor_group = agent.actor_opt.member_state_dict(0)["param_groups"][0]
    critic_group = agent.critic_opt.member_state_dict(0)["param_groups"][0]
    assert actor_group["lr"] == 3e-3 and critic_group["lr"] == 1e-2
    if optimizer == "sgd":
        assert critic_group["momentum"] == 0.9


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-member-lrs", "shared-lr-whole-tensors"])
def test_packed_optimizer_steps_each_member_as_torch_does(optimizer, shared):
    """Per-member learning rates (and SGD momenta) in one packed step equal one torch optimizer per member; so
    does the whole-tensor step of members that share them (a weight stored transposed included)."""
    torch.manual_seed(0)
    lrs, momenta = [1e-3, 3e-2, 1e-3], ([0.0, 0.9, 0.5] if optimizer == "sgd" else None)
    if shared:
        lrs, momenta = [3e-2] * 3, ([0.9] * 3 if optimizer == "sgd" else None)
    stacked = [
        torch.nn.Parameter(torch.randn(3, 4, 5)),
        torch.nn.Parameter(torch.randn(3, 7)),
        torch.nn.Parameter(torch.randn(3, 6, 4).transpose(1, 2)),  # PackedLinear's layout
    ]
    members = [[torch.nn.Parameter(p[k].detach().clone()) for p in stacked] for k in range(3)]
    packed_opt = PackedOptimizer(optimizer, stacked, lrs, momenta)
    assert packed_opt.whole == shared
    reference = [
        torch.optim.Adam(ps, lr=lr) if optimizer == "adam" else torch.optim.SGD(ps, lr=lr, momentum=momenta[k])
        for k, (ps, lr) in enumerate(zip(members, lrs))
    ]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in stacked]
        packed_opt.zero_grad()
        for p, g in zip(stacked, grads):
            p.grad = g.clone() if g.is_contiguous() else g.transpose(1, 2).contiguous().transpose(1, 2)
        packed_opt.step()
        for k, (ps, opt) in enumerate(zip(members, reference)):
            opt.zero_grad()
            for p, g in zip(ps, grads):
                p.grad = g[k].clone()
            opt.step()
    for k, ps in enumerate(members):
        for p, q in zip(stacked, ps):
            torch.testing.assert_close(p[k], q, rtol=1e-6, atol=1e-7)
        state = packed_opt.member_state_dict(k)["state"]
        for i, q in enumerate(ps):
            for key, value in reference[k].state[q].items():
                torch.testing.assert_close(state[i][key], value, rtol=1e-6, atol=1e-7)
