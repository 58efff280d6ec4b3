"""Encoder BatchNorm (encoder_norm=batch_norm): where it sits, which mode each pass that runs the encoder uses,
per member inside mixed packs, and its per-member arithmetic against ``nn.BatchNorm2d``.

Expected modes are written from the rule, not read from ``agent.bn_modes``: in an update the encoder runs twice,
first on s (the critic update's pass), then on s' (the target computation). Under ``encoder_bn_passes=train``
(the authors' code) both passes use batch statistics; under ``by_step`` the pass on s follows Critic-II's letter
and the pass on s' Critic-III's. Acting never uses batch statistics; the Q-bias pass runs as the pass on s does,
without moving running statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from agent.bn_modes import bn_layers
from agent.drqv2 import DrQV2Agent
from agent.networks import PackedBatchNorm2d, PackedConv2d
from tests.agent.test_packing import SHAPES, _batches

PIXELS = SHAPES["pixels"]
# Critic-II / Critic-III letters T T, E T, T E, E E, and an all-eval string.
MODES = ["TTETT", "TTEET", "TTETE", "TTEEE", "EEEEE"]


def _agent(tiny_config, modes: list[str], rule: str) -> DrQV2Agent:
    configs = [
        tiny_config(obs_type="pixels", encoder_norm="batch_norm", encoder_bn_passes=rule, bn_mode=mode, seed=k + 1)
        for k, mode in enumerate(modes)
    ]
    return DrQV2Agent(configs, PIXELS, 1, torch.device("cpu"))


class EncoderRecorder:
    """Per encoder forward call and member: the train flags of its BN layers and whether their running means moved."""

    def __init__(self, agent: DrQV2Agent):
        self.layers = bn_layers(agent.encoder)
        self.events: list[tuple[tuple[bool, ...], tuple[bool, ...]]] = []
        self.handles = [
            h
            for layer in self.layers
            for h in (layer.register_forward_pre_hook(self._before), layer.register_forward_hook(self._after))
        ]

    @staticmethod
    def _before(layer, inputs):
        layer._saved_mean = layer.running_mean.clone()

    def _after(self, layer, inputs, output):
        moved = tuple(not torch.equal(a, b) for a, b in zip(layer._saved_mean, layer.running_mean))
        self.events.append((tuple(layer.member_train), moved))

    def calls(self, member: int) -> list[tuple[set[bool], set[bool]]]:
        n = len(self.layers)
        assert len(self.events) % n == 0
        return [
            ({t[member] for t, _ in self.events[i : i + n]}, {m[member] for _, m in self.events[i : i + n]})
            for i in range(0, len(self.events), n)
        ]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_encoder_bn_sits_after_each_convolution_before_its_relu(tiny_config):
    agent = _agent(tiny_config, ["TTETT", "TTTTT"], "train")
    kinds = [type(m) for m in agent.encoder.convnet]
    assert kinds == [PackedConv2d, PackedBatchNorm2d, nn.ReLU] * 4
    member = agent.member_state_dict(1)["encoder"]
    for key, value in nn.BatchNorm2d(32).state_dict().items():  # a member's slice is nn.BatchNorm2d(32)'s
        assert member[f"convnet.1.{key}"].shape == value.shape
    plain = DrQV2Agent(tiny_config(obs_type="pixels"), PIXELS, 1, torch.device("cpu"))
    assert not bn_layers(plain.encoder) and len(plain.encoder.convnet) == 8  # DrQ-v2's encoder, unchanged


@pytest.mark.parametrize("rule", ["train", "by_step"])
@pytest.mark.parametrize("modes", [[m] for m in MODES[:4]] + [MODES], ids=[*MODES[:4], "mixed-pack"])
def test_each_encoder_pass_runs_in_its_mode_per_member(modes, rule, tiny_config):
    agent = _agent(tiny_config, modes, rule)
    recorder = EncoderRecorder(agent)
    agent.update(_batches("pixels", len(modes), 8, 1)[0], step=1000).read()
    for member, mode in enumerate(modes):
        on_s = rule == "train" or mode[3] == "T"
        on_next_s = rule == "train" or mode[4] == "T"
        calls = recorder.calls(member)
        assert calls == [({on_s}, {on_s}), ({on_next_s}, {on_next_s})], (member, mode, calls)

    recorder.events.clear()
    obs = np.random.default_rng(1).integers(0, 256, (len(modes), 5, *PIXELS), dtype=np.uint8)
    agent.act(obs[:, 0], step=10_000, eval_mode=False)
    agent.act(obs[:, 0], step=10_000, eval_mode=True)
    for member in range(len(modes)):
        assert recorder.calls(member) == [({False}, {False})] * 2  # acting: running statistics, never moved
    recorder.events.clear()
    before = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in recorder.layers]
    agent.q_values(list(obs), [np.zeros((5, 1), np.float32)] * len(modes))
    for member, mode in enumerate(modes):
        on_s = rule == "train" or mode[3] == "T"
        ((training, _),) = recorder.calls(member)
        assert training == {on_s}  # the Q-bias pass runs as the pass on s ...
    for (mean, var), layer in zip(before, recorder.layers):  # ... and leaves the statistics as they were
        assert torch.equal(mean, layer.running_mean) and torch.equal(var, layer.running_var)
    recorder.remove()
    assert not any(any(layer.member_train) for layer in bn_layers(agent.encoder))


def test_packed_batchnorm2d_is_each_members_batchnorm2d():
    """Mixed modes (train, eval, train) and the uniform path, against one nn.BatchNorm2d per member."""
    k, c = 3, 4
    torch.manual_seed(0)
    packed = PackedBatchNorm2d(k, c)
    singles = [nn.BatchNorm2d(c) for _ in range(k)]
    with torch.no_grad():
        for member, single in enumerate(singles):
            for name in ("weight", "bias", "running_mean"):
                values = torch.randn(c)
                getattr(single, name).copy_(values)
                getattr(packed, name)[member].copy_(values)
            var = torch.rand(c) + 0.5
            single.running_var.copy_(var)
            packed.running_var[member].copy_(var)
    for flags in ((True, False, True), (True, True, True), (False, False, False)):
        x = torch.randn(6, k * c, 5, 5, requires_grad=True)
        packed.member_train = flags
        out = packed(x)
        out.square().sum().backward()
        for member, (single, train) in enumerate(zip(singles, flags)):
            xs = x.detach()[:, member * c : (member + 1) * c].clone().requires_grad_(True)
            single.train(train)
            expected = single(xs)
            expected.square().sum().backward()
            group = slice(member * c, (member + 1) * c)
            torch.testing.assert_close(out[:, group], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(x.grad[:, group], xs.grad, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(packed.running_mean[member], single.running_mean)
            torch.testing.assert_close(packed.running_var[member], single.running_var)
            assert int(packed.num_batches_tracked[member]) == int(single.num_batches_tracked)
