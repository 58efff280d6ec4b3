"""Which BatchNorm mode each of the five update steps runs in (SPEC §3).

A mode is data: a 5-letter string over {T, E} in the order of ``STEP_NAMES``.
``bn_step`` puts every BatchNorm layer of a packed module into each member's
mode for the step (members of a pack may run different mode strings) for one
forward pass and restores the previous flags afterwards; the rest of the module
(LayerNorm, Linear) has no train/eval behaviour, so only BN layers are touched.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from agent.networks import PackedBatchNorm1d

STEP_NAMES = ("actor_i", "actor_ii", "critic_i", "critic_ii", "critic_iii")
STEP_TITLES = ("Actor-I", "Actor-II", "Critic-I", "Critic-II", "Critic-III")
DEFAULT_BN_MODE = "TTETT"  # MA-BN: actor TT, critic ETT
ALL_BN_MODES = tuple("".join(letters) for letters in itertools.product("TE", repeat=len(STEP_NAMES)))


def validate_bn_mode(mode: str) -> str:
    if not isinstance(mode, str) or len(mode) != len(STEP_NAMES) or set(mode) - {"T", "E"}:
        raise ValueError(f"must be {len(STEP_NAMES)} letters, each T (train) or E (eval), in the order "
                         f"{', '.join(STEP_TITLES)}; e.g. {DEFAULT_BN_MODE} (MA-BN) or TTTTT")
    return mode


def step_is_train(mode: str, step: str) -> bool:
    """True when ``step`` (one of STEP_NAMES) runs its BN layers on batch statistics."""
    return validate_bn_mode(mode)[STEP_NAMES.index(step)] == "T"


def mode_by_step(mode: str) -> dict[str, str]:
    """{'actor_i': 'T', ...}: one key per step, for dashboards that group by a single step."""
    return dict(zip(STEP_NAMES, validate_bn_mode(mode)))


def bn_layers(module: nn.Module) -> list[PackedBatchNorm1d]:
    """The BN layers of ``module``, found once: walking the module tree every forward cost ~1 ms an update.

    Networks here are never restructured after construction, so the cached list stays valid.
    """
    cached = module.__dict__.get("_bn_layers_cache")
    if cached is None:
        cached = [m for m in module.modules() if isinstance(m, PackedBatchNorm1d)]
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
    saved = [(layer, layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone())
             for layer in bn_layers(module)]
    try:
        yield
    finally:
        for layer, mean, var, count in saved:
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
            layer.num_batches_tracked.copy_(count)
