"""Puts a network's BatchNorm layers into the modes of method.md §3 (what a mode means, as data: ``contract/modes.py``).

``bn_step`` puts every BatchNorm layer of a packed module into each member's
mode for the step (members of a pack may run different mode strings) for one
forward pass and restores the previous flags afterwards; the rest of the module
(LayerNorm, Linear) has no train/eval behaviour, so only BN layers are touched.

Three more places apply what a mode means, all here: the mode the encoder's
BatchNorm runs in for each pass that runs the encoder (``bn_encoder_pass``), where
Critic-I's batch statistics come from (``bn_critic_i``, by ``critic_i_stats``), and
how Critic-I's normalization is read for a measurement (``bn_critic_i_measurement``,
the Q-bias of method.md §7).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

from contract.modes import (  # noqa: F401 - what a mode means (data); this module applies it to networks
    ALL_BN_MODES,
    BATCH_STAT_NORMS,
    CRITIC_I_STATS,
    DEFAULT_BN_MODE,
    ENCODER_BN_PASSES,
    ENCODER_PASS_STEPS,
    Q_BIAS_BN_STATS,
    STEP_NAMES,
    STEP_TITLES,
    CriticIStats,
    EncoderBnPasses,
    QBiasBnStats,
    encoder_pass_is_train,
    mode_by_step,
    step_is_train,
    validate_bn_mode,
)

if TYPE_CHECKING:  # the mode strings are data: the store and analysis read them without torch (issue #12)
    import torch
    from torch import nn

    from agent.networks import PackedBatchNorm, PackedBatchNorm1d


def bn_layers(module: nn.Module) -> list[PackedBatchNorm]:
    """The BN layers of ``module``, found once: walking the module tree every forward cost ~1 ms an update.

    Networks here are never restructured after construction, so the cached list stays valid.
    """
    cached = module.__dict__.get("_bn_layers_cache")
    if cached is None:
        from agent.networks import PackedBatchNorm

        cached = [m for m in module.modules() if isinstance(m, PackedBatchNorm)]
        module.__dict__["_bn_layers_cache"] = cached
    return cached


@contextmanager
def bn_train_mode(module: nn.Module, train: bool | Sequence[bool]) -> Iterator[None]:
    """Run the BN layers of ``module`` in train (batch stats) or eval (running stats) mode, per member."""
    layers = bn_layers(module)
    previous = [layer.member_train for layer in layers]
    for layer in layers:
        layer.member_train = (train,) * len(layer.member_train) if isinstance(train, bool) else tuple(train)
    try:
        yield
    finally:
        for layer, was_training in zip(layers, previous):
            layer.member_train = was_training


@contextmanager
def bn_step(module: nn.Module, modes: Sequence[str], step: str) -> Iterator[None]:
    """Each member's BN layers in the mode its mode string names for ``step``."""
    with bn_train_mode(module, [step_is_train(mode, step) for mode in modes]):
        yield


@contextmanager
def bn_critic_i(
    critic: nn.Module, modes: Sequence[str], stats: Sequence[str], reference_from: int | None
) -> Iterator[None]:
    """Critic-I: each member's critic BN layers in its mode, a train member taking its batch statistics from
    where its ``critic_i_stats`` (one of CRITIC_I_STATS per member) says. ``reference_from``: the row of the
    forward's batch where the update's replay pairs (s, a) begin, which a ``replay_batch`` member needs (None when
    the batch holds none)."""
    if "replay_batch" in stats and reference_from is None:
        raise ValueError("critic_i_stats=replay_batch needs the update's replay pairs in Critic-I's batch")
    if reference_from is None and all(value == "mode" for value in stats):  # the default: nothing to set per layer
        with bn_step(critic, modes, "critic_i"):
            yield
        return
    layers = cast("list[PackedBatchNorm1d]", bn_layers(critic))  # the critic is an MLP: its BN layers are 1d
    with bn_step(critic, modes, "critic_i"):
        for layer in layers:
            layer.member_stats, layer.reference_from = tuple(stats), reference_from
        try:
            yield
        finally:
            for layer in layers:
                layer.member_stats, layer.reference_from = ("mode",) * len(stats), None


@contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Let a train-mode forward use batch statistics without moving the running ones.

    Used for measurements (Q-bias) that must see the Critic-I normalization
    without changing the agent.
    """
    saved = [
        (layer, layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone())
        for layer in bn_layers(module)
    ]
    try:
        yield
    finally:
        for layer, mean, var, count in saved:
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(count)


@contextmanager
def bn_encoder_pass(encoder: nn.Module, modes: Sequence[str], rule: str, encoder_pass: str) -> Iterator[None]:
    """Each member's encoder BN layers in its mode for one of the update's encoder passes (a no-op without BN).

    Acting and evaluation run the encoder in eval mode, like the actor (``bn_train_mode(encoder, False)``); the
    Q-bias pass runs it as the "obs" pass (the features Critic-I reads come from that pass) with its running
    statistics frozen: in the authors' ``cal_est_bias`` the encoder is still in train mode, so in train mode it
    normalizes with the measured batch's own statistics (the authors' moves the running ones too; a measurement
    here never changes the agent).
    """
    with bn_train_mode(encoder, [encoder_pass_is_train(mode, rule, encoder_pass) for mode in modes]):
        yield


@contextmanager
def bn_critic_i_measurement(
    critic: nn.Module,
    modes: Sequence[str],
    how: Sequence[str],
    saved: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
) -> Iterator[None]:
    """Critic-I's normalization for a measurement (the Q-bias pass), each member by its own mode and ``how``
    (one of Q_BIAS_BN_STATS per member); running statistics are left exactly as they were.

    Critic-I = E: running statistics. Critic-I = T with ``eval_batch``: the measured batch's own statistics.
    Critic-I = T with ``update``: ``saved``, per BN layer of ``critic`` (in ``bn_layers`` order) the (mean,
    biased variance) the latest update's Critic-I forward computed, (K, width) each: x -> (x - mean) /
    sqrt(var + eps) * weight + bias, as the authors' ``cal_est_bias`` normalizes. That is the eval-mode formula,
    so those members run in eval mode over the saved statistics put in place of their running ones.
    """
    train = [step_is_train(mode, "critic_i") for mode in modes]
    for value in how:
        if value not in Q_BIAS_BN_STATS:
            raise ValueError(f"q_bias_bn_stats={value!r}: allowed values are {', '.join(Q_BIAS_BN_STATS)}")
    from_update = [t and h == "update" for t, h in zip(train, how)]
    layers = bn_layers(critic)
    with frozen_bn_statistics(critic):
        if any(from_update) and layers:
            if saved is None or len(saved) != len(layers):
                raise ValueError("q_bias_bn_stats=update needs the saved Critic-I statistics of every critic BN layer")
            import torch

            device = layers[0].running_mean.device
            members = torch.tensor([k for k, use in enumerate(from_update) if use], device=device)
            with torch.no_grad():
                for layer, (mean, var) in zip(layers, saved):
                    layer.running_mean.index_copy_(0, members, mean.index_select(0, members).to(layer.running_mean))
                    layer.running_var.index_copy_(0, members, var.index_select(0, members).to(layer.running_var))
        with bn_train_mode(critic, [t and not use for t, use in zip(train, from_update)]):
            yield
