"""Batch Renormalization (Ioffe 2017; method.md §2) against its formula written out in float64, member by member
in every layout a pack uses; with r_max = 1 and d_max = 0 it is BatchNorm; its bounds follow the warm-up; a pack of
renorm members learns what each learns alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agent.bn_modes import ALL_BN_MODES, bn_layers
from agent.drqv2 import DrQV2Agent
from agent.networks import PackedBatchRenorm1d, PackedBatchRenorm2d, renorm_bounds_at
from contract.config import ConfigError, build_config, identity_config
from tests.agent.conftest import packed
from tests.agent.test_bn_modes import _check_modes
from tests.agent.test_packing import TOLERANCE, _batches

EPS = 1e-5
MOMENTUM = 0.1


def _set_statistics(layer, generator: torch.Generator) -> None:
    """Affine parameters and running statistics far enough from a standard batch's that r and d clip."""
    with torch.no_grad():
        layer.weight.copy_(1 + 0.5 * torch.randn(layer.weight.shape, generator=generator))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
        layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=generator))
        layer.running_var.copy_(0.1 + 4 * torch.rand(layer.running_var.shape, generator=generator))


def _formula(x, weight, bias, running_mean, running_var, bounds, train, dims):
    """One member's layer, written out: ``x`` reduced over ``dims``, parameters broadcast along the rest; returns the
    output, (r, d) and the running statistics afterwards."""
    shape = [1] * x.dim()
    channel = next(i for i in range(x.dim()) if i not in dims)
    shape[channel] = -1

    def b(v):
        return v.view(shape)

    if not train:
        y = (x - b(running_mean)) / torch.sqrt(b(running_var) + EPS) * b(weight) + b(bias)
        return y, None, (running_mean, running_var)
    r_max, d_max = bounds
    mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
    sigma_batch, sigma = torch.sqrt(var + EPS), torch.sqrt(running_var + EPS)
    r = (sigma_batch.detach() / sigma).clamp(1 / r_max, r_max)
    d = ((mean.detach() - running_mean) / sigma).clamp(-d_max, d_max)
    y = ((x - b(mean)) / b(sigma_batch) * b(r) + b(d)) * b(weight) + b(bias)
    count = x.numel() // x.shape[channel]
    new_mean = (1 - MOMENTUM) * running_mean + MOMENTUM * mean.detach()
    new_var = (1 - MOMENTUM) * running_var + MOMENTUM * var.detach() * count / (count - 1)
    return y, (r, d), (new_mean, new_var)


LAYOUTS_1D = {
    # name: (members, input of member k from the packed input, packed input from the members' inputs)
    "alone-rows": (1, lambda x, k: x[0], lambda xs: xs[0].unsqueeze(0)),  # a pack of one: (1, N, width)
    "pack-features-first": (3, lambda x, k: x[k].t(), lambda xs: torch.stack([m.t() for m in xs])),  # (K, width, N)
}


@pytest.mark.parametrize("layout", LAYOUTS_1D)
def test_renorm_1d_forward_and_backward_follow_the_formula(layout, float64):
    k, to_member, to_packed = LAYOUTS_1D[layout]
    width, n = 6, 9
    g = torch.Generator().manual_seed(0)
    layer = PackedBatchRenorm1d(k, width, momentum=MOMENTUM, eps=EPS)
    _set_statistics(layer, g)
    layer.renorm_bounds = (1.5, 0.4)
    flags = (True, False, True)[:k]
    layer.member_train = flags
    members = [(0.5 + 2 * torch.rand(width, generator=g)) * torch.randn(n, width, generator=g) for _ in range(k)]
    x = to_packed(members).requires_grad_(True)
    upstream = torch.randn(n, width, generator=g)
    before = [(layer.running_mean[m].clone(), layer.running_var[m].clone()) for m in range(k)]
    params = [(layer.weight[m].detach().clone(), layer.bias[m].detach().clone()) for m in range(k)]

    out = layer(x)
    out_members = [to_member(out.view(x.shape), m) for m in range(k)]
    sum((o * upstream).sum() for o in out_members).backward()

    clipped_r, clipped_d = False, False
    for m, train in enumerate(flags):
        xm = members[m].clone().requires_grad_(True)
        weight, bias = (p.clone().requires_grad_(True) for p in params[m])
        expected, correction, (new_mean, new_var) = _formula(
            xm, weight, bias, *before[m], layer.renorm_bounds, train, dims=(0,)
        )
        (expected * upstream).sum().backward()
        torch.testing.assert_close(out_members[m], expected)
        torch.testing.assert_close(to_member(x.grad, m), xm.grad)
        torch.testing.assert_close(layer.weight.grad[m], weight.grad)
        torch.testing.assert_close(layer.bias.grad[m], bias.grad)
        torch.testing.assert_close(layer.running_mean[m], new_mean)
        torch.testing.assert_close(layer.running_var[m], new_var)
        assert int(layer.num_batches_tracked[m]) == int(train)
        if correction is not None:
            r, d = correction
            clipped_r |= bool(((r == 1.5) | (r == 1 / 1.5)).any())
            clipped_d |= bool((d.abs() == 0.4).any())
            assert not torch.equal(r, torch.ones_like(r))  # the correction really acts
    assert clipped_r and clipped_d  # both bounds really clip somewhere, so the clipping is checked too


def test_renorm_2d_forward_and_backward_follow_the_formula(float64):
    k, c = 2, 3
    g = torch.Generator().manual_seed(1)
    layer = PackedBatchRenorm2d(k, c, momentum=MOMENTUM, eps=EPS)
    _set_statistics(layer, g)
    layer.renorm_bounds = (2.0, 1.0)
    flags = (True, False)
    layer.member_train = flags
    x = torch.randn(4, k * c, 5, 5, generator=g).mul_(1.7).requires_grad_(True)
    upstream = torch.randn(x.shape, generator=g)
    before = [(layer.running_mean[m].clone(), layer.running_var[m].clone()) for m in range(k)]
    params = [(layer.weight[m].detach().clone(), layer.bias[m].detach().clone()) for m in range(k)]
    out = layer(x)
    (out * upstream).sum().backward()
    for m, train in enumerate(flags):
        group = slice(m * c, (m + 1) * c)
        xm = x.detach()[:, group].clone().requires_grad_(True)
        weight, bias = (p.clone().requires_grad_(True) for p in params[m])
        expected, _, (new_mean, new_var) = _formula(
            xm, weight, bias, *before[m], layer.renorm_bounds, train, dims=(0, 2, 3)
        )
        (expected * upstream[:, group]).sum().backward()
        torch.testing.assert_close(out[:, group], expected)
        torch.testing.assert_close(x.grad[:, group], xm.grad)
        torch.testing.assert_close(layer.weight.grad[m], weight.grad)
        torch.testing.assert_close(layer.running_mean[m], new_mean)
        torch.testing.assert_close(layer.running_var[m], new_var)


@pytest.mark.parametrize("k", [1, 3])
def test_renorm_without_room_to_correct_is_batchnorm_in_train_mode(k, float64):
    """r_max = 1, d_max = 0 (the warm-up's start): outputs, gradients and running statistics of nn.BatchNorm."""
    width, n = 5, 7
    g = torch.Generator().manual_seed(2)
    layer, layer_2d = PackedBatchRenorm1d(k, width), PackedBatchRenorm2d(k, width)
    for pack in (layer, layer_2d):
        _set_statistics(pack, g)
        pack.renorm_bounds = (1.0, 0.0)
        pack.member_train = (True,) * k
    for pack, reference_type, x in (
        (layer, nn.BatchNorm1d, torch.randn(k, n, width, generator=g) * 3 + 1),
        (layer_2d, nn.BatchNorm2d, torch.randn(k, 4, width, 3, 3, generator=g) * 3 + 1),
    ):
        references = []
        for m in range(k):
            reference = reference_type(width)
            reference.load_state_dict({name: value[m] for name, value in pack.state_dict().items()})
            references.append(reference.train())
        member_x = list(x)
        if reference_type is nn.BatchNorm1d:
            packed_x = x.transpose(1, 2) if k > 1 else x  # the pack's MLP layout
        else:
            packed_x = x.transpose(0, 1).reshape(4, k * width, 3, 3)  # the encoder's grouped layout
        packed_x = packed_x.detach().requires_grad_(True)
        out = pack(packed_x)
        out.square().sum().backward()
        for m, reference in enumerate(references):
            xm = member_x[m].detach().clone().requires_grad_(True)
            expected = reference(xm)
            expected.square().sum().backward()
            if reference_type is nn.BatchNorm1d:
                got = out.view(packed_x.shape)[m].t() if k > 1 else out.view(n, width)
                got_grad = packed_x.grad[m].t() if k > 1 else packed_x.grad[0]
            else:
                group = slice(m * width, (m + 1) * width)
                got, got_grad = out[:, group], packed_x.grad[:, group]
            torch.testing.assert_close(got, expected)
            torch.testing.assert_close(got_grad, xm.grad)
            torch.testing.assert_close(pack.weight.grad[m], reference.weight.grad)
            torch.testing.assert_close(pack.running_mean[m], reference.running_mean)
            torch.testing.assert_close(pack.running_var[m], reference.running_var)


def test_warm_up_relaxes_the_bounds_linearly_and_the_agent_applies_them(state_batch, make_agent, tiny_config):
    config = tiny_config(critic_norm="batch_renorm", actor_norm="batch_renorm", renorm_warmup_steps=1000)
    assert renorm_bounds_at(config, 0) == (1.0, 0.0)
    assert renorm_bounds_at(config, 250) == pytest.approx((1.5, 1.25))  # defaults: r_max 3, d_max 5
    assert renorm_bounds_at(config, 1000) == renorm_bounds_at(config, 10**6) == (3.0, 5.0)
    assert renorm_bounds_at(config.model_copy(update={"renorm_warmup_steps": 0}), 0) == (3.0, 5.0)
    agent = make_agent(config)
    layers = [layer for net in (agent.actor, agent.critic, agent.critic_target) for layer in bn_layers(net)]
    assert len(layers) == 10 and all(isinstance(layer, PackedBatchRenorm1d) for layer in layers)
    agent.update(packed(state_batch), step=500).read()
    assert all(layer.renorm_bounds == pytest.approx((2.0, 2.5)) for layer in layers)


def test_every_mode_runs_its_own_steps_with_renorm_layers(state_batch, make_agent, tiny_config):
    """The 32 strings as the members of one pack of renorm networks: each member's layers follow its own string."""
    configs = [
        tiny_config(actor_norm="batch_renorm", critic_norm="batch_renorm", bn_mode=mode, seed=i + 1)
        for i, mode in enumerate(ALL_BN_MODES)
    ]
    agent = make_agent(configs)
    assert all(isinstance(layer, PackedBatchRenorm1d) for layer in bn_layers(agent.critic))
    _check_modes(agent, list(ALL_BN_MODES), state_batch)


# Renorm everywhere BN can sit, in mixed modes (and, for pixels, the encoder's passes by_step: mixed there too).
RENORM_MEMBERS = [
    dict(seed=1, bn_mode="TTETT"),
    dict(seed=2, bn_mode="TTTTT", target_bn_stats="copy"),
    dict(seed=3, bn_mode="EEEEE", lr=2e-3),
]
RENORM = dict(actor_norm="batch_renorm", critic_norm="batch_renorm", renorm_warmup_steps=10, renorm_r_max=1.2)


@pytest.mark.parametrize(
    "obs_type, extra",
    [("states", {}), ("pixels", {"encoder_norm": "batch_renorm", "encoder_bn_passes": "by_step"})],
    ids=["states", "pixels-encoder-renorm"],
)
def test_pack_of_renorm_members_equals_each_member_alone(obs_type, extra, float64, tiny_config):
    configs = [tiny_config(obs_type=obs_type, **RENORM, **m, **extra) for m in RENORM_MEMBERS]
    shape = {"states": (5,), "pixels": (9, 24, 24)}[obs_type]
    cpu = torch.device("cpu")
    pack = DrQV2Agent(configs, shape, 1, cpu)
    alone = [DrQV2Agent(config, shape, 1, cpu) for config in configs]
    for i, batch in enumerate(_batches(obs_type, 3, 8, 12)):
        packed_metrics = pack.update(batch, step=i).read()  # steps 0..11: through the warm-up and past it
        for k, agent in enumerate(alone):
            single = agent.update({key: value[k : k + 1] for key, value in batch.items()}, step=i).read()
            for name, values in single.items():
                if not name.startswith("perf/"):
                    assert packed_metrics[name][k] == pytest.approx(values[0], rel=TOLERANCE, abs=TOLERANCE)
    for k, agent in enumerate(alone):
        in_pack, by_itself = pack.member_state_dict(k), agent.member_state_dict(0)
        for net in ("encoder", "actor", "critic", "critic_target"):
            for key, value in by_itself[net].items():
                torch.testing.assert_close(in_pack[net][key], value, rtol=TOLERANCE, atol=TOLERANCE)
    if extra:
        assert all(isinstance(layer, PackedBatchRenorm2d) for layer in bn_layers(pack.encoder))
        assert len(bn_layers(pack.encoder)) == 4


def test_renorm_settings_need_a_renorm_layer_and_enter_only_renorm_ids():
    with pytest.raises(ConfigError, match="renorm_r_max=2.0: Batch Renormalization settings.*batch_renorm"):
        build_config({"renorm_r_max": 2.0})
    with pytest.raises(ConfigError, match="renorm_r_max"):
        build_config({"critic_norm": "batch_renorm", "renorm_r_max": 0.5})  # r_max >= 1
    renorm_keys = {"renorm_r_max", "renorm_d_max", "renorm_warmup_steps"}
    assert not set(identity_config(build_config({}).to_dict())) & renorm_keys
    for norms in ({"critic_norm": "batch_renorm"}, {"actor_norm": "batch_renorm", "critic_norm": "none"}):
        assert renorm_keys <= set(identity_config(build_config(norms).to_dict()))
    # A BN mode applies to renorm networks as to BN ones, and renorm in the encoder needs pixels.
    assert build_config({"critic_norm": "batch_renorm", "actor_norm": "none"}).bn_mode == "TTETT"
    with pytest.raises(ConfigError, match="encoder_norm='batch_renorm'"):
        build_config({"obs_type": "states", "task": "cartpole_swingup", "encoder_norm": "batch_renorm"})
