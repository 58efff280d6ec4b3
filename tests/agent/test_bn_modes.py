"""Every one of the 32 mode strings puts each update step's BN layers in the mode it names,
alone (a pack of one) and inside mixed-mode packs where every member runs another string.

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
from agent.networks import PackedBatchNorm1d, PackedLayerNorm
from tests.agent.conftest import packed

CALL_ORDER = {"actor": ("actor_ii", "actor_i"), "critic": ("critic_ii", "critic_i"), "critic_target": ("critic_iii",)}


class BNRecorder:
    """Per network, per forward call, per member: was every BN layer in train mode, and did its running mean move?"""

    def __init__(self, agent):
        self.events: dict[str, list[tuple[tuple[bool, ...], tuple[bool, ...]]]] = {name: [] for name in CALL_ORDER}
        self.layers = {name: bn_layers(getattr(agent, name)) for name in CALL_ORDER}
        self.handles = []
        for name, layers in self.layers.items():
            for layer in layers:
                self.handles.append(layer.register_forward_pre_hook(self._before))
                self.handles.append(layer.register_forward_hook(self._after(name)))

    @staticmethod
    def _before(layer, inputs):
        layer._saved_mean = layer.running_mean.clone()

    def _after(self, name):
        def hook(layer, inputs, output):
            moved = tuple(not torch.equal(saved, now) for saved, now in zip(layer._saved_mean, layer.running_mean))
            self.events[name].append((tuple(layer.member_train), moved))

        return hook

    def calls(self, name: str, member: int) -> list[tuple[set[bool], set[bool]]]:
        """Member's layer events grouped into forward calls: (set of training flags, set of moved flags)."""
        per_call = len(self.layers[name])
        events = self.events[name]
        assert len(events) % per_call == 0
        return [
            ({t[member] for t, _ in events[i : i + per_call]}, {mv[member] for _, mv in events[i : i + per_call]})
            for i in range(0, len(events), per_call)
        ]

    def clear(self):
        for events in self.events.values():
            events.clear()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_there_are_32_distinct_modes():
    assert len(set(ALL_BN_MODES)) == 32
    assert all(validate_bn_mode(mode) == mode for mode in ALL_BN_MODES)


def _check_modes(agent, modes, state_batch):
    recorder = BNRecorder(agent)
    agent.update(packed(state_batch, len(modes)), step=1000).read()
    for member, mode in enumerate(modes):
        expected = mode_by_step(mode)
        for network, steps in CALL_ORDER.items():
            calls = recorder.calls(network, member)
            assert len(calls) == len(steps), (network, len(calls))
            for step, (training, moved) in zip(steps, calls):
                is_train = expected[step] == "T"
                assert training == {is_train}, f"member {member} {mode}: {step} ran with training={training}"
                assert moved == {is_train}, f"member {member} {mode}: {step} moved running stats: {moved}"

    # Acting (exploration and deterministic evaluation) and the Q-bias probe never touch statistics.
    recorder.clear()
    obs = np.repeat(state_batch["obs"][:1], len(modes), axis=0)
    agent.act(obs, step=10_000, eval_mode=False)
    agent.act(obs, step=10_000, eval_mode=True)
    for member in range(len(modes)):
        for training, moved in recorder.calls("actor", member):
            assert training == {False} and moved == {False}
    before = [layer.running_mean.clone() for layer in bn_layers(agent.critic)]
    agent.q_values([state_batch["obs"][:16]] * len(modes), [state_batch["action"][:16]] * len(modes))
    for member, mode in enumerate(modes):
        ((training, _),) = recorder.calls("critic", member)
        # Q-bias reads Q as Critic-I normalizes: a T member on its own batch's statistics under eval_batch; under
        # update on the statistics saved from the update's Critic-I forward, applied by the eval-mode formula
        # (values checked by hand in test_q_bias_stats) ...
        on_batch = mode_by_step(mode)["critic_i"] == "T" and agent.configs[member].q_bias_bn_stats == "eval_batch"
        assert training == {on_batch}
    after = [layer.running_mean for layer in bn_layers(agent.critic)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # ... and leaves the statistics as they were
    recorder.remove()
    # Outside an update every BN layer is back in eval mode.
    for network in CALL_ORDER:
        assert not any(any(layer.member_train) for layer in bn_layers(getattr(agent, network)))


@pytest.mark.parametrize("mode", ALL_BN_MODES)
def test_each_step_runs_in_its_mode_and_only_train_steps_move_statistics(mode, state_batch, make_agent, tiny_config):
    _check_modes(make_agent(tiny_config(bn_mode=mode)), [mode], state_batch)


@pytest.mark.parametrize("rotation, q_bias_bn_stats", [(0, "update"), (7, "update"), (13, "eval_batch")])
def test_every_mode_runs_its_own_steps_inside_one_mixed_pack(
    rotation, q_bias_bn_stats, state_batch, make_agent, tiny_config
):
    """All 32 strings as the 32 members of one pack (in three member orders): each member's BN layers follow
    its own string in every step, whatever its neighbours run."""
    modes = list(ALL_BN_MODES[rotation:] + ALL_BN_MODES[:rotation])
    agent = make_agent(
        [tiny_config(bn_mode=mode, seed=i + 1, q_bias_bn_stats=q_bias_bn_stats) for i, mode in enumerate(modes)]
    )
    _check_modes(agent, modes, state_batch)


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
    assert isinstance(agent.actor.trunk[1], PackedLayerNorm)
    assert isinstance(agent.critic.q1[1], PackedBatchNorm1d) and agent.critic.q1[1].running_mean.shape == (1, 16)


def test_layer_norm_and_none_have_no_bn(make_agent, tiny_config):
    for norm in ("none", "layer_norm"):
        agent = make_agent(tiny_config(actor_norm=norm, critic_norm=norm))
        assert not bn_layers(agent.actor) and not bn_layers(agent.critic)
    agent = make_agent(tiny_config(actor_norm="layer_norm", critic_norm="layer_norm"))
    assert sum(isinstance(m, PackedLayerNorm) for m in agent.critic.q1.modules()) == 2


def test_bn_critic_with_plain_actor(state_batch, make_agent, tiny_config):
    agent = make_agent(tiny_config(actor_norm="none", critic_norm="batch_norm", bn_mode="TTETT"))
    assert not bn_layers(agent.actor) and len(bn_layers(agent.critic)) == 4
    metrics = agent.update(packed(state_batch), step=1000).read()
    assert np.isfinite(metrics["losses/critic"]).all()
