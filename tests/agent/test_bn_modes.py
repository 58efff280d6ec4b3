"""Every one of the 32 mode strings puts each update step's BN layers in the mode it names.

The step a forward pass belongs to is read from the order DrQ-v2 runs them in
(critic update, then actor update), independently of ``agent.bn_modes``:
actor calls are Actor-II then Actor-I, online-critic calls Critic-II then
Critic-I, and the target critic runs once, Critic-III.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.bn_modes import ALL_BN_MODES, STEP_NAMES, bn_layers, mode_by_step, validate_bn_mode

CALL_ORDER = {"actor": ("actor_ii", "actor_i"), "critic": ("critic_ii", "critic_i"), "critic_target": ("critic_iii",)}


class BNRecorder:
    """Per network, per forward call: was every BN layer in train mode, and did its running mean move?"""

    def __init__(self, agent):
        self.events: dict[str, list[tuple[bool, bool]]] = {name: [] for name in CALL_ORDER}
        self.layers = {name: bn_layers(getattr(agent, name)) for name in CALL_ORDER}
        self.handles = []
        for name, layers in self.layers.items():
            for layer in layers:
                self.handles.append(layer.register_forward_pre_hook(self._before(name)))
                self.handles.append(layer.register_forward_hook(self._after(name)))

    def _before(self, name):
        def hook(layer, inputs):
            layer._saved_mean = layer.running_mean.clone()
        return hook

    def _after(self, name):
        def hook(layer, inputs, output):
            moved = not torch.equal(layer._saved_mean, layer.running_mean)
            self.events[name].append((layer.training, moved))
        return hook

    def calls(self, name: str) -> list[tuple[set[bool], set[bool]]]:
        """Group layer events into forward calls: (set of training flags, set of moved flags)."""
        per_call = len(self.layers[name])
        events = self.events[name]
        assert len(events) % per_call == 0
        return [({t for t, _ in events[i:i + per_call]}, {mv for _, mv in events[i:i + per_call]})
                for i in range(0, len(events), per_call)]

    def clear(self):
        for events in self.events.values():
            events.clear()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_there_are_32_distinct_modes():
    assert len(set(ALL_BN_MODES)) == 32
    assert all(validate_bn_mode(mode) == mode for mode in ALL_BN_MODES)


@pytest.mark.parametrize("mode", ALL_BN_MODES)
def test_each_step_runs_in_its_mode_and_only_train_steps_move_statistics(mode, state_batch, make_agent, tiny_config):
    agent = make_agent(tiny_config(bn_mode=mode))
    recorder = BNRecorder(agent)
    agent.update(state_batch, step=1000)
    expected = mode_by_step(mode)
    for network, steps in CALL_ORDER.items():
        calls = recorder.calls(network)
        assert len(calls) == len(steps), (network, len(calls))
        for step, (training, moved) in zip(steps, calls):
            is_train = expected[step] == "T"
            assert training == {is_train}, f"{mode}: {step} ran with training={training}"
            assert moved == {is_train}, f"{mode}: {step} moved running stats: {moved}"

    # Acting (exploration and deterministic evaluation) and the Q-bias probe never touch statistics.
    recorder.clear()
    obs = state_batch["obs"][0]
    agent.act(obs, step=10_000, eval_mode=False)
    agent.act(obs, step=10_000, eval_mode=True)
    for training, moved in recorder.calls("actor"):
        assert training == {False} and moved == {False}
    before = [layer.running_mean.clone() for layer in bn_layers(agent.critic)]
    agent.q_values(state_batch["obs"][:16], state_batch["action"][:16])
    (training, _), = recorder.calls("critic")
    assert training == {expected["critic_i"] == "T"}  # Q-bias reads Q as Critic-I sees it ...
    after = [layer.running_mean for layer in bn_layers(agent.critic)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # ... and leaves the statistics as they were
    recorder.remove()
    # Outside an update every BN layer is back in eval mode.
    for network in CALL_ORDER:
        assert not any(layer.training for layer in bn_layers(getattr(agent, network)))


def test_mode_by_step_names_every_step():
    assert mode_by_step("TTETT") == dict(zip(STEP_NAMES, "TTETT"))


@pytest.mark.parametrize("bad", ["TTXTT", "TTET", "TTETTT", "ttett", ""])
def test_invalid_mode_strings_are_rejected(bad):
    with pytest.raises(ValueError, match="T \\(train\\) or E \\(eval\\)"):
        validate_bn_mode(bad)


def test_bn_sits_after_hidden_linears_only(make_agent, tiny_config):
    agent = make_agent(tiny_config())
    assert len(bn_layers(agent.actor)) == 2  # the actor MLP's two hidden layers
    assert len(bn_layers(agent.critic)) == 4  # two per Q head
    # The trunks keep their LayerNorm; BN never sees the raw input.
    assert isinstance(agent.actor.trunk[1], torch.nn.LayerNorm)
    assert isinstance(agent.critic.q1[1], torch.nn.BatchNorm1d) and agent.critic.q1[1].num_features == 16


def test_layer_norm_and_none_have_no_bn(make_agent, tiny_config):
    for norm in ("none", "layer_norm"):
        agent = make_agent(tiny_config(actor_norm=norm, critic_norm=norm))
        assert not bn_layers(agent.actor) and not bn_layers(agent.critic)
    agent = make_agent(tiny_config(actor_norm="layer_norm", critic_norm="layer_norm"))
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in agent.critic.q1.modules()) == 2


def test_bn_critic_with_plain_actor(state_batch, make_agent, tiny_config):
    agent = make_agent(tiny_config(actor_norm="none", critic_norm="batch_norm", bn_mode="TTETT"))
    assert not bn_layers(agent.actor) and len(bn_layers(agent.critic)) == 4
    metrics = agent.update(state_batch, step=1000)
    assert np.isfinite(metrics["losses/critic"])
