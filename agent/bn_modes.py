"""Which BatchNorm mode each of the five update steps runs in (method.md §3).

A mode is data: a 5-letter string over {T, E} in the order of ``STEP_NAMES``.
``bn_step`` puts every BatchNorm layer of a packed module into each member's
mode for the step (members of a pack may run different mode strings) for one
forward pass and restores the previous flags afterwards; the rest of the module
(LayerNorm, Linear) has no train/eval behaviour, so only BN layers are touched.

Two more places say what a mode means, both here: which mode the encoder's
BatchNorm runs in for each pass that runs the encoder (``bn_encoder_pass``), and
how Critic-I's normalization is read for a measurement (``bn_critic_i_measurement``,
the Q-bias of method.md §7).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # the mode strings are data: the store and analysis read them without torch (issue #12)
    import torch
    from torch import nn

    from agent.networks import PackedBatchNorm

STEP_NAMES = ("actor_i", "actor_ii", "critic_i", "critic_ii", "critic_iii")
STEP_TITLES = ("Actor-I", "Actor-II", "Critic-I", "Critic-II", "Critic-III")
DEFAULT_BN_MODE = "TTETT"  # MA-BN: actor TT, critic ETT
ALL_BN_MODES = tuple("".join(letters) for letters in itertools.product("TE", repeat=len(STEP_NAMES)))

# The update's two encoder passes (encoder_norm=batch_norm) and, under encoder_bn_passes=by_step, the step whose
# letter each one follows: the pass on s feeds the critic update (Critic-II; Actor-I and Critic-I read its
# output detached), the pass on s' feeds the target computation (Actor-II and Critic-III).
ENCODER_PASS_STEPS = {"obs": "critic_ii", "next_obs": "critic_iii"}
# train: the authors' code (drqv2/drqv2.py, DrQV2AgentOni.update) calls `self.encoder.train()` before both passes,
# whatever the mode string, so both run on batch statistics and move the running ones; by_step: ENCODER_PASS_STEPS.
EncoderBnPasses = Literal["train", "by_step"]
ENCODER_BN_PASSES: tuple[str, ...] = get_args(EncoderBnPasses)
# How a Critic-I = T member's BN layers normalize in the Q-bias pass: with the batch statistics the latest update's
# Critic-I forward computed (update: the authors' cal_est_bias), or with those of the evaluation batch itself.
QBiasBnStats = Literal["update", "eval_batch"]
Q_BIAS_BN_STATS: tuple[str, ...] = get_args(QBiasBnStats)


def validate_bn_mode(mode: str) -> str:
    if not isinstance(mode, str) or len(mode) != len(STEP_NAMES) or set(mode) - {"T", "E"}:
        raise ValueError(
            f"must be {len(STEP_NAMES)} letters, each T (train) or E (eval), in the order "
            f"{', '.join(STEP_TITLES)}; e.g. {DEFAULT_BN_MODE} (MA-BN) or TTTTT"
        )
    return mode


def step_is_train(mode: str, step: str) -> bool:
    """True when ``step`` (one of STEP_NAMES) runs its BN layers on batch statistics."""
    return validate_bn_mode(mode)[STEP_NAMES.index(step)] == "T"


def mode_by_step(mode: str) -> dict[str, str]:
    """{'actor_i': 'T', ...}: one key per step, for dashboards that group by a single step."""
    return dict(zip(STEP_NAMES, validate_bn_mode(mode)))


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


def encoder_pass_is_train(mode: str, rule: str, encoder_pass: str) -> bool:
    """Whether the encoder's BN layers run on batch statistics in ``encoder_pass`` ("obs" or "next_obs") of an
    update, for a member with mode string ``mode`` under ``rule`` (one of ENCODER_BN_PASSES)."""
    if rule == "train":
        return True
    if rule == "by_step":
        return step_is_train(mode, ENCODER_PASS_STEPS[encoder_pass])
    raise ValueError(f"encoder_bn_passes={rule!r}: allowed values are {', '.join(ENCODER_BN_PASSES)}")


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
