"""Buffer mixing (SPEC §4), target BN statistics (SPEC §5) and optimizers (SPEC §6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.bn_modes import bn_layers


def critic_i_rows(agent, batch) -> int:
    """Rows the online critic sees in its second forward of an update (Critic-I)."""
    seen: list[int] = []
    handle = agent.critic.q1[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    agent.update(batch, step=1000)
    handle.remove()
    assert len(seen) == 2  # Critic-II then Critic-I
    return seen[1]


@pytest.mark.parametrize("rho, expected_extra", [(0.0, 0), (0.25, 2), (0.5, 4), (1.0, 8), (2.0, 16), (4.0, 32)])
def test_mixing_adds_floor_rho_b_replay_rows(rho, expected_extra, state_batch, make_agent, tiny_config):
    config = tiny_config(bn_mode="TTTTT", buffer_mix_ratio=rho)
    assert config.mix_rows == expected_extra == int(np.floor(rho * 8))
    batch = {k: v[:config.replay_rows_per_update] for k, v in state_batch.items()}
    assert len(batch["obs"]) == max(8, expected_extra)  # rho > 1 needs further sampled rows
    assert critic_i_rows(make_agent(config), batch) == 8 + expected_extra


def test_mixed_rows_are_the_replay_pairs(state_batch, make_agent, tiny_config):
    config = tiny_config(bn_mode="TTTTT", buffer_mix_ratio=0.5)
    agent = make_agent(config)
    captured = []
    handle = agent.critic.register_forward_hook(lambda mod, inp, out: captured.append(inp[1].detach().clone()))
    agent.update(state_batch, step=1000)
    handle.remove()
    critic_i_actions = captured[1]
    assert torch.equal(critic_i_actions[8:], torch.as_tensor(state_batch["action"][:4]))


def test_actor_loss_uses_policy_rows_only(state_batch, make_agent, tiny_config):
    # With Critic-I in eval mode every row is normalized alone, so extra rows can
    # change the actor loss only if the loss reads them.
    losses = []
    for rho in (0.0, 1.0):
        agent = make_agent(tiny_config(bn_mode="TTETT", buffer_mix_ratio=rho, allow_mix_in_eval_mode=True))
        torch.manual_seed(5)
        losses.append(agent.update(state_batch, step=1000)["losses/actor"])
    assert losses[0] == losses[1]
    # In train mode the same extra rows shift the batch statistics, hence the loss.
    train_losses = []
    for rho in (0.0, 1.0):
        agent = make_agent(tiny_config(bn_mode="TTTTT", buffer_mix_ratio=rho))
        torch.manual_seed(5)
        train_losses.append(agent.update(state_batch, step=1000)["losses/actor"])
    assert train_losses[0] != train_losses[1]


def _stats(layers):
    return [(layer.running_mean.clone(), layer.running_var.clone()) for layer in layers]


@pytest.mark.parametrize("how", ["independent", "copy", "soft"])
def test_target_bn_statistics(how, state_batch, make_agent, tiny_config):
    agent = make_agent(tiny_config(bn_mode="TTTTT", target_bn_stats=how, critic_target_tau=0.25))
    batch = {k: torch.as_tensor(v[:8]) for k, v in state_batch.items()}
    # Move the online statistics away from the target's, then run only the target update.
    with torch.no_grad():
        agent.critic.train()
        agent.critic(batch["obs"].float() * 3.0 + 1.0, batch["action"])
        agent.critic.eval()
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


@pytest.mark.parametrize("optimizer, kind", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_optimizer_choice(optimizer, kind, make_agent, tiny_config):
    extra = {"sgd_momentum": 0.9} if optimizer == "sgd" else {}
    agent = make_agent(tiny_config(optimizer=optimizer, lr=3e-3, critic_lr=1e-2, **extra))
    assert isinstance(agent.actor_opt, kind) and isinstance(agent.critic_opt, kind)
    assert agent.actor_opt.param_groups[0]["lr"] == 3e-3 and agent.critic_opt.param_groups[0]["lr"] == 1e-2
    if optimizer == "sgd":
        assert agent.critic_opt.param_groups[0]["momentum"] == 0.9
