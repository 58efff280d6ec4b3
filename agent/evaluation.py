"""A pack's evaluation episodes and Q-bias measurements (method.md §7), run by the trainer between agent steps.

Every member's evaluation environment steps in lockstep under one batched deterministic ``act``; a member whose
world fails meanwhile leaves the pack (failed) and the rollout goes on without it.  Nothing here draws from the
training streams: the evaluation environments have their own, and the Q-bias augmentation shifts come from a
stream fixed by (seed, step), so a resumed trial evaluates exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from agent import metrics as m
from agent.drqv2 import DrQV2Agent
from agent.member import Member
from contract.config import TrialConfig


class TrainerView(Protocol):
    """What an evaluation uses of the trainer (``agent.train.Trainer``) that runs it."""

    @property
    def config(self) -> TrialConfig: ...  # the keys every member shares
    @property
    def members(self) -> Sequence[Member]: ...  # still in the pack: an evaluation may end some (failed)
    @property
    def agent(self) -> DrQV2Agent: ...
    @property
    def step(self) -> int: ...
    @property
    def frame(self) -> int: ...
    def for_members(self, call: Callable[..., Any], members: Sequence[Member], *per_member: Any) -> list[Any]: ...
    def emit(self, member: Member, frame: int, row: Mapping[str, float]) -> None: ...


class QSamples(NamedTuple):
    """Per member, the Q-bias samples of some rollouts: states, actions and discounted returns-to-go."""

    obs: list[list[np.ndarray]]
    actions: list[list[np.ndarray]]
    mc_returns: list[list[float]]


@torch.no_grad()
def evaluate(trainer: TrainerView) -> None:
    """Deterministic episodes, all members in lockstep, one evaluation row each. The Q-bias comes from their first
    q_bias_max_states states, or (q_bias_every_frames > 0) is the mean of the measurements since the previous
    evaluation."""
    c = trainer.config
    members = list(trainer.members)
    measure_here = not c.q_bias_every_frames
    returns, samples = _rollouts(
        trainer, members, c.num_eval_episodes, c.q_bias_max_states if measure_here else 0, stop_when_sampled=False
    )
    members, returns, samples = _still_in_pack(trainer, members, returns, samples)
    biases = (
        _q_biases(trainer, members, samples) if measure_here else [_interval_mean(mb.q_bias_pending) for mb in members]
    )
    coverage = trainer.for_members(lambda member: member.world.coverage(), members)
    for k, member in enumerate(members):
        if member not in trainer.members:
            continue
        row = {m.EVAL_RETURN: float(np.mean(returns[k]))} if returns[k] else {}
        bias = biases[k]
        if bias is not None:
            row[m.Q_BIAS_MEAN], row[m.Q_BIAS_STD] = bias
        row.update(coverage[k])
        member.q_bias_pending.clear()
        trainer.emit(member, trainer.frame, row)


@torch.no_grad()
def measure_q_bias(trainer: TrainerView) -> None:
    """One Q-bias measurement of its own (q_bias_every_frames > 0), kept until the next evaluation row:
    up to q_bias_episodes deterministic episodes, no more than q_bias_max_states states need."""
    c = trainer.config
    members = list(trainer.members)
    returns, samples = _rollouts(trainer, members, c.q_bias_episodes, c.q_bias_max_states, stop_when_sampled=True)
    members, _, samples = _still_in_pack(trainer, members, returns, samples)
    for member, bias in zip(members, _q_biases(trainer, members, samples)):
        if bias is not None:
            member.q_bias_pending.append(bias)


def _rollouts(
    trainer: TrainerView, members: Sequence[Member], episodes: int, q_states: int, stop_when_sampled: bool
) -> tuple[list[list[float]], QSamples]:
    """Deterministic episodes of every member's evaluation environment in lockstep: each member's episode
    returns, and its first ``q_states`` (state, action, discounted return-to-go) triples.
    ``stop_when_sampled``: start no episode once every member has its ``q_states``."""
    returns: list[list[float]] = [[] for _ in members]
    samples = QSamples([[] for _ in members], [[] for _ in members], [[] for _ in members])
    for _ in range(episodes):
        if stop_when_sampled and all(len(o) >= q_states for o in samples.obs):
            break
        # (reward, last) of each member's evaluation step; its observation is world.eval_obs. A member whose
        # world fails leaves the pack (failed) and the rollout goes on without it.
        steps: dict[int, tuple[float, bool]] = {}
        alive = _alive(trainer, members)
        for k, reply in zip(alive, trainer.for_members(lambda mb: mb.world.eval_reset(), [members[k] for k in alive])):
            if reply is not None:
                steps[k] = reply
        rewards: dict[int, list[float]] = {k: [] for k in steps}
        while (alive := _alive(trainer, members)) and not all(steps[k][1] for k in alive):
            obs = np.stack([members[k].world.eval_obs for k in alive])  # the agent's members, in its order
            actions = trainer.agent.act(obs, trainer.step, eval_mode=True)
            running = [i for i, k in enumerate(alive) if not steps[k][1]]  # the others wait
            for i in running:
                k = alive[i]
                if len(samples.obs[k]) < q_states:
                    samples.obs[k].append(obs[i])
                    samples.actions[k].append(actions[i])
            stepped = trainer.for_members(
                lambda member, action: member.world.eval_step(action),
                [members[alive[i]] for i in running],
                [actions[i] for i in running],
            )
            for i, step in zip(running, stepped):
                if step is not None:
                    steps[alive[i]] = step
                    rewards[alive[i]].append(step[0])
        for k in _alive(trainer, members):
            returns[k].append(float(np.sum(rewards[k])))
            needed = len(samples.obs[k]) - len(samples.mc_returns[k])
            if needed:
                discounted = m.discounted_returns(np.asarray(rewards[k]), trainer.config.discount)
                samples.mc_returns[k].extend(discounted[:needed])
    return returns, samples


def _alive(trainer: TrainerView, members: Sequence[Member]) -> list[int]:
    """Indices of ``members`` still in the pack (in the agent's order: the pack only ever loses members)."""
    return [k for k, member in enumerate(members) if member in trainer.members]


def _still_in_pack(
    trainer: TrainerView, members: Sequence[Member], returns: list[list[float]], samples: QSamples
) -> tuple[list[Member], list[list[float]], QSamples]:
    alive = _alive(trainer, members)
    kept = QSamples(
        [samples.obs[k] for k in alive], [samples.actions[k] for k in alive], [samples.mc_returns[k] for k in alive]
    )
    return [members[k] for k in alive], [returns[k] for k in alive], kept


def _q_biases(trainer: TrainerView, members: Sequence[Member], samples: QSamples) -> list[tuple[float, float] | None]:
    """Each member's (mean, std) relative Q-bias over its samples (method.md §7), or None where there is none."""
    if not all(samples.obs):
        return [None] * len(members)
    seeds = None
    if trainer.config.q_bias_augment:
        # Shifts from a stream of their own, fixed by (seed, step): training's streams are untouched and a
        # resumed trial draws the same shifts.
        seeds = [
            int(np.random.SeedSequence([member.config.seed, trainer.step]).generate_state(1)[0]) for member in members
        ]
    q_values = trainer.agent.q_values(
        [np.stack(o) for o in samples.obs], [np.stack(a) for a in samples.actions], augment_seeds=seeds
    )
    return [m.q_bias(q, np.asarray(g)) if q is not None else None for q, g in zip(q_values, samples.mc_returns)]


def _interval_mean(biases: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """The mean of the (mean, std) pairs measured over an evaluation interval, each averaged on its own (the
    authors' train.py averages est_bias_mean and est_bias_std so); None when nothing was measured."""
    if not biases:
        return None
    means, stds = zip(*biases)
    return float(np.mean(means)), float(np.mean(stds))
