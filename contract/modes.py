"""The BatchNorm modes as data (method.md section 3): which of the five update steps run their BN layers on batch
statistics (T, train mode) or on running statistics (E, eval mode), and the two rules that say what a mode means
for the encoder's passes and for Critic-I's measurement.  A mode is a 5-letter string over {T, E} in the order of
``STEP_NAMES``; ``CRITIC_I_STATS`` says where a Critic-I = T member takes its batch statistics from.  The store,
the grid format and analysis read these without torch; ``agent/bn_modes.py`` puts a network's BN layers into them.
"""

from __future__ import annotations

import itertools
from typing import Literal, get_args

STEP_NAMES = ("actor_i", "actor_ii", "critic_i", "critic_ii", "critic_iii")
STEP_TITLES = ("Actor-I", "Actor-II", "Critic-I", "Critic-II", "Critic-III")
DEFAULT_BN_MODE = "TTETT"  # MA-BN: actor TT, critic ETT
ALL_BN_MODES = tuple("".join(letters) for letters in itertools.product("TE", repeat=len(STEP_NAMES)))
# The normalization kinds whose layers run in a mode (T: batch statistics, E: running statistics): BatchNorm, and
# Batch Renormalization (Ioffe 2017), whose train mode corrects the batch statistics towards the running ones.
BATCH_STAT_NORMS = ("batch_norm", "batch_renorm")

# Where a Critic-I = T member's critic BN layers take the statistics that normalize (s, pi(s)) (method.md §3),
# so that the candidate causes of Critic-I = T's failure can be separated:
#   mode: what the letter says: the forward's own batch statistics, the actor's gradient through them;
#   batch_stopgrad: the same statistics with the gradient stopped through mean and variance (the actor's gradient
#     sees the normalization noise but cannot move the statistics);
#   replay_batch: the statistics of the update's replay pairs (s, a), Critic-II's batch, computed in the same
#     forward at Critic-I's weights: batch-noisy, from the buffer's action distribution, not the policy's;
#   running_noisy: the running statistics plus the forward's own batch statistics' sampling noise, taken as half
#     the difference of its two halves' statistics (zero mean whatever the mismatch), without gradient: noise
#     without mismatch.
# Every source but running_noisy moves the running statistics with the statistics it normalized with, as a
# train-mode forward does; running_noisy leaves them as Critic-I = E does.
CriticIStats = Literal["mode", "batch_stopgrad", "replay_batch", "running_noisy"]
CRITIC_I_STATS: tuple[str, ...] = get_args(CriticIStats)

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


def encoder_pass_is_train(mode: str, rule: str, encoder_pass: str) -> bool:
    """Whether the encoder's BN layers run on batch statistics in ``encoder_pass`` ("obs" or "next_obs") of an
    update, for a member with mode string ``mode`` under ``rule`` (one of ENCODER_BN_PASSES)."""
    if rule == "train":
        return True
    if rule == "by_step":
        return step_is_train(mode, ENCODER_PASS_STEPS[encoder_pass])
    raise ValueError(f"encoder_bn_passes={rule!r}: allowed values are {', '.join(ENCODER_BN_PASSES)}")
