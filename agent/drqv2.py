"""DrQ-v2 with mode-aware batch normalization, for a pack of K members trained in lockstep.

``update(batch, step) -> UpdateResult`` is the whole learner: it knows nothing of
the loop, logging or checkpoint files.  Each forward pass of an update runs
inside ``bn_step(network, modes, step_name)``, which is the only place BN modes
are set; every member runs its own mode string.  A pack of one is one trial;
a pack of K (issue #9) runs K trials' networks as one batched computation, each
member with its own parameters, statistics, optimizer state, learning rates and
random stream, so member k learns exactly what it would learn alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from agent import metrics as m
from agent.bn_modes import (
    bn_critic_i,
    bn_critic_i_measurement,
    bn_encoder_pass,
    bn_layers,
    bn_step,
    bn_train_mode,
    frozen_bn_statistics,
    step_is_train,
)
from agent.networks import (
    Encoder,
    PackedBatchNorm1d,
    RandomShift,
    build_networks,
    group_pixels,
    init_linears,
    renorm_bounds_at,
)
from agent.optim import PackedOptimizer
from contract.config import TrialConfig, check_packable
from contract.schedules import parse_schedule

# How the encoder's output is flattened for the trunks (Encoder.forward). Checkpoints
# without this key were written before the change from DrQ-v2's (C, H, W) order:
# ``python -m agent.checkpoint upgrade`` rearranges them into the same function.
FEATURE_ORDER = "hwc"
NETWORKS = ("actor", "critic", "critic_target", "encoder")
OPTIMIZERS = ("actor_opt", "critic_opt", "encoder_opt")


class Diverged(RuntimeError):
    """A loss or Q value became non-finite."""


class UpdateResult:
    """The metrics of one packed update, left on the device until read.

    Reading them is the update's only host synchronization; the loop reads them
    after its environment steps, so on a GPU the update runs while the CPU steps
    the environments.  ``perf/update_ms`` is the loop time the update cost: its
    host time plus any wait for the device when the metrics are read.
    """

    def __init__(self, metrics: dict[str, torch.Tensor], host_s: float):
        self._metrics, self._host_s = metrics, host_s
        self._values: dict[str, np.ndarray] | None = None

    def read(self) -> dict[str, np.ndarray]:
        """{metric: (K,) array}, one value per member."""
        if self._values is None:
            start = time.perf_counter()
            names = list(self._metrics)
            stacked = (
                torch.stack([self._metrics[n].float() for n in names]).cpu().numpy() if names else np.zeros((0, 1))
            )
            waited = time.perf_counter() - start
            self._values = {name: stacked[i] for i, name in enumerate(names)}
            self._values[m.UPDATE_MS] = np.full(stacked.shape[1], (self._host_s + waited) * 1000.0)
        return self._values


def nonfinite_members(values: dict[str, np.ndarray]) -> list[int]:
    """Members with a non-finite loss or Q value in ``values``."""
    stacked = np.stack(list(values.values()))
    return [int(k) for k in np.flatnonzero(~np.isfinite(stacked).all(axis=0))]


class DrQV2Agent:
    def __init__(
        self,
        configs: TrialConfig | Sequence[TrialConfig],
        obs_shape: tuple[int, ...],
        action_dim: int,
        device: torch.device,
    ):
        configs = [configs] if isinstance(configs, TrialConfig) else list(configs)
        check_packable(configs)
        self.configs = configs
        self.config = config = configs[0]  # what every member shares (shapes, schedules, batch size)
        self.k = k = len(configs)
        self.device = device
        self.modes = [c.resolved_bn_mode for c in configs]
        self.critic_i_stats = [c.critic_i_stats for c in configs]
        self.pixels = config.obs_type == "pixels"
        self.action_dim = action_dim
        self.stddev = parse_schedule(config.stddev_schedule)
        # One random stream per member (noise, augmentation shifts, exploration); its seed is the member's.
        self.generators = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
        init_generators = [torch.Generator().manual_seed(c.seed) for c in configs]
        networks = build_networks(config, k, obs_shape, action_dim)
        self.encoder: nn.Module = networks.encoder
        self.actor, self.critic, self.critic_target = networks.actor, networks.critic, networks.critic_target
        self.aug: RandomShift | None = None
        if isinstance(self.encoder, Encoder):
            self.encoder.reset_parameters(init_generators)
            self.aug = RandomShift(pad=4)
        init_linears(self.actor, init_generators)
        init_linears(self.critic, init_generators)
        for net in (self.encoder, self.actor, self.critic, self.critic_target):
            net.to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.dtype = next(self.actor.parameters()).dtype  # torch's default dtype at construction
        critic_lrs = [c.critic_lr or c.lr for c in configs]
        momenta = [c.sgd_momentum for c in configs]
        self.actor_opt = PackedOptimizer(
            config.optimizer, list(self.actor.parameters()), [c.actor_lr or c.lr for c in configs], momenta
        )
        self.critic_opt = PackedOptimizer(config.optimizer, list(self.critic.parameters()), critic_lrs, momenta)
        self.encoder_opt = (
            PackedOptimizer(config.optimizer, list(self.encoder.parameters()), critic_lrs, momenta)
            if self.pixels
            else None
        )
        # Outside an update every BN layer sits in eval mode: acting, evaluation
        # and Q-bias never move running statistics unless a step asks for T.
        for net in (self.encoder, self.actor, self.critic, self.critic_target):
            net.eval()
        # The critic is an MLP: its BN layers are the 1d ones (record_batch_stats, recorded).
        self._critic_bn = cast("list[PackedBatchNorm1d]", bn_layers(self.critic))
        # Batch Renormalization layers, whose clipping bounds follow the warm-up (renorm_bounds_at).
        self._renorm_layers = [
            layer for net in networks.every() for layer in bn_layers(net) if layer.renorm_bounds is not None
        ]
        # Per critic BN layer, each member's (mean, biased var) from the latest update's Critic-I forward
        # (q_bias_bn_stats=update), computed from the recorded input when first asked for after an update
        # (critic_i_statistics), or loaded from a checkpoint.
        self._critic_i_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._target_stats_members = {
            how: torch.tensor(
                [i for i, c in enumerate(configs) if c.target_bn_stats == how], dtype=torch.long, device=device
            )
            for how in ("copy", "soft", "recalibrate")
        }
        # critic_target=none (CrossQ) is shared by a pack (it shapes the critic update's forward). The target
        # critic is still built and saved, left at its initial weights and never read: the checkpoint layout
        # stays one for every trial.
        self.uses_target_network = config.critic_target == "soft"
        # The latest update's Critic-III inputs (s', a'), which target_bn_stats=recalibrate re-estimates from.
        self._critic_iii_inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._staging: dict[str, torch.Tensor] = {}  # pinned host buffers (CUDA only)

    # ------------------------------------------------------------ acting
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(K, N, *obs_shape) -> (K, N, repr_dim), without augmentation."""
        if self.pixels:
            return self.encoder(group_pixels(obs, self.config.channels_last))
        return obs

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        tensor = torch.as_tensor(obs, device=self.device)
        return tensor if self.pixels else tensor.to(self.dtype)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One action per member from ``obs`` (K, *obs_shape): (K, action_dim).

        BN layers run on running statistics (eval mode) whatever the mode string.
        """
        with bn_train_mode(self.actor, False), bn_train_mode(self.encoder, False):
            features = self.encode(self.obs_tensor(obs).unsqueeze(1))
            dist = self.actor(features, self.stddev(step))
            if eval_mode:
                action = dist.mean
            else:
                action = dist.sample(self.generators, clip=None)
                if step < self.config.num_expl_steps:
                    for k, generator in enumerate(self.generators):
                        action[k].uniform_(-1.0, 1.0, generator=generator)
        return action[:, 0].cpu().numpy()

    @torch.inference_mode()
    def q_values(
        self, obs: Sequence[np.ndarray], action: Sequence[np.ndarray], augment_seeds: Sequence[int] | None = None
    ) -> list[np.ndarray | None]:
        """min(Q1, Q2) of each member's online critic on its own (states, actions), normalized as the Q-bias
        reads Critic-I (``bn_modes.bn_critic_i_measurement``, by ``q_bias_bn_stats``; the encoder as
        ``bn_modes.bn_encoder_pass`` says). Running statistics are left untouched.

        Members may bring different numbers of states; a member's batch statistics come from its own rows only.
        ``augment_seeds``: random-shift the pixel observations first, member k's shifts drawn from a generator
        seeded with ``augment_seeds[k]`` (never the member's training stream). A member's entry is None when its
        reading needs update statistics it does not have yet (before its first update).
        """
        saved = self.critic_i_statistics()
        how = [c.q_bias_bn_stats for c in self.configs]
        missing = [False] * self.k
        if saved is not None:
            missing = [
                step_is_train(mode, "critic_i") and h == "update" and not bool(saved[0][0][k].isfinite().all())
                for k, (mode, h) in enumerate(zip(self.modes, how))
            ]
        lengths = [len(o) for o in obs]
        out: list[np.ndarray | None] = [None] * self.k
        for length in sorted(set(lengths)):
            # Members with this many states bring theirs; the others borrow a donor's rows, and their
            # output is discarded: every member's batch holds only real rows of one member.
            donor = lengths.index(length)
            obs_t = torch.stack(
                [self.obs_tensor(obs[k] if lengths[k] == length else obs[donor]) for k in range(self.k)]
            )
            act_t = torch.stack(
                [
                    torch.as_tensor(action[k] if lengths[k] == length else action[donor], device=self.device).to(
                        self.dtype
                    )
                    for k in range(self.k)
                ]
            )
            features = obs_t
            if self.pixels:
                if augment_seeds is not None and self.aug is not None:
                    generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in augment_seeds]
                    grouped = self.aug(obs_t, generators)
                else:
                    grouped = group_pixels(obs_t, self.config.channels_last)
                with (
                    frozen_bn_statistics(self.encoder),
                    bn_encoder_pass(self.encoder, self.modes, self.config.encoder_bn_passes, "obs"),
                ):
                    features = self.encoder(grouped)
            with bn_critic_i_measurement(self.critic, self.modes, how, saved):
                q1, q2 = self.critic(features, act_t)
            q = torch.min(q1, q2).squeeze(-1).cpu().numpy()
            for k in range(self.k):
                if lengths[k] == length and not missing[k]:
                    out[k] = q[k]
        return out

    def critic_i_statistics(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per critic BN layer, each member's (mean, biased variance) of the latest update's Critic-I forward,
        (K, width) each; NaN for a member with none (no update yet and none in its checkpoint). None without
        critic BN."""
        if not self._critic_bn:
            return None
        if self._critic_i_stats is None:
            # Plain tensors even when asked inside inference mode: a checkpoint load writes into them.
            with torch.inference_mode(False), torch.no_grad():
                if self._critic_bn[0].recorded:
                    self._critic_i_stats = [layer.batch_stats() for layer in self._critic_bn]
                else:
                    self._critic_i_stats = [
                        (torch.full_like(layer.running_mean, math.nan), torch.full_like(layer.running_var, math.nan))
                        for layer in self._critic_bn
                    ]
        return self._critic_i_stats

    # ------------------------------------------------------------ learning
    def batch_to_tensors(self, batch: dict[str, np.ndarray], pinned: bool = False) -> dict[str, torch.Tensor]:
        """Pixels stay uint8 until after the augmentation (4x less memory traffic).

        On CUDA the batch goes through reused pinned staging buffers, so the
        host-to-device copy is asynchronous. Reusing a buffer is safe because the
        previous update's metrics are read (a synchronization) before the next
        batch is staged. ``pinned``: the arrays already live in page-locked memory
        (a worker pack's shared block), copied from there directly; safe for the
        same reason (the workers sample into it again only after that read).
        """
        tensors: dict[str, torch.Tensor] = {}
        if self.device.type == "cuda" and pinned:
            tensors = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in batch.items()}
        elif self.device.type == "cuda":
            for key, value in batch.items():
                staging = self._staging.get(key)
                if staging is None or staging.shape != value.shape:
                    staging = self._staging[key] = torch.empty(
                        value.shape, dtype=torch.from_numpy(value).dtype, pin_memory=True
                    )
                staging.copy_(torch.from_numpy(value))
                tensors[key] = staging.to(self.device, non_blocking=True)
        else:
            tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
        for key, tensor in tensors.items():
            if tensor.is_floating_point() or not self.pixels:
                tensors[key] = tensor.to(self.dtype)  # float32, or float64 where a test asks for it
        return tensors

    def autocast(self) -> AbstractContextManager[Any]:
        """bfloat16 autocast around the update's forward passes when ``precision=bf16``; backward runs outside,
        losses and BatchNorm statistics stay float32 (autocast's own policy)."""
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def update(self, batch: dict[str, np.ndarray], step: int, pinned: bool = False) -> UpdateResult:
        """One DrQ-v2 update of every member. ``batch`` arrays are (K, rows, ...); rows past
        batch_size feed buffer mixing only. ``pinned``: see ``batch_to_tensors``."""
        start = time.perf_counter()
        b = self.config.batch_size
        t = self.batch_to_tensors(batch, pinned)
        bounds = renorm_bounds_at(self.config, step)
        for layer in self._renorm_layers:
            layer.renorm_bounds = bounds
        if self.aug is not None:
            rule = self.config.encoder_bn_passes
            with self.autocast(), bn_encoder_pass(self.encoder, self.modes, rule, "obs"):
                all_obs = self.encoder(self.aug(t["obs"], self.generators))
            with torch.no_grad(), self.autocast(), bn_encoder_pass(self.encoder, self.modes, rule, "next_obs"):
                next_obs = self.encoder(self.aug(_rows(t["next_obs"], b), self.generators))
        else:
            all_obs, next_obs = t["obs"], _rows(t["next_obs"], b)
        obs, action = _rows(all_obs, b), _rows(t["action"], b)
        metrics = self.update_critic(obs, action, _rows(t["reward"], b), _rows(t["discount"], b), next_obs, step)
        mix = self.config.mix_rows
        metrics.update(self.update_actor(obs.detach(), action, step, all_obs[:, :mix].detach(), t["action"][:, :mix]))
        self.update_target()
        return UpdateResult(metrics, time.perf_counter() - start)

    def update_critic(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        discount: torch.Tensor,
        next_obs: torch.Tensor,
        step: int,
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad(), self.autocast(), bn_step(self.actor, self.modes, "actor_ii"):
            next_action = self.actor(next_obs, self.stddev(step)).sample(self.generators, clip=self.config.stddev_clip)
        if self.uses_target_network:
            with torch.no_grad(), self.autocast(), bn_step(self.critic_target, self.modes, "critic_iii"):
                target_q1, target_q2 = self.critic_target(next_obs, next_action)
            if len(self._target_stats_members["recalibrate"]):  # kept only for the members that re-estimate from it
                self._critic_iii_inputs = (next_obs, next_action)
            with bn_step(self.critic, self.modes, "critic_ii"), self.autocast():
                q1, q2 = self.critic(obs, action)
        else:
            # CrossQ: one forward over (s, a) then (s', a'), so both halves share its batch statistics.
            b = obs.shape[1]
            with bn_step(self.critic, self.modes, "critic_ii"), self.autocast():
                joint_q1, joint_q2 = self.critic(torch.cat([obs, next_obs], dim=1), torch.cat([action, next_action], 1))
            q1, q2 = joint_q1[:, :b], joint_q2[:, :b]
            target_q1, target_q2 = joint_q1[:, b:].detach(), joint_q2[:, b:].detach()
        target_q = reward + discount * torch.min(target_q1, target_q2).to(reward.dtype)
        q1, q2 = q1.to(reward.dtype), q2.to(reward.dtype)
        # Per member: mean squared TD error of each head, as F.mse_loss of one trial.
        critic_loss = (q1 - target_q).square().mean(dim=(1, 2)) + (q2 - target_q).square().mean(dim=(1, 2))
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad()
        self.critic_opt.zero_grad()
        critic_loss.sum().backward()  # members share no parameter: each gets its own loss's gradient
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        return {m.CRITIC_LOSS: critic_loss.detach(), m.Q_MEAN: q1.detach().mean(dim=(1, 2))}

    def update_actor(
        self,
        obs: torch.Tensor,
        replay_action: torch.Tensor,
        step: int,
        mix_obs: torch.Tensor,
        mix_action: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The actor step on ``obs`` (Critic-II's states; ``replay_action``: Critic-II's actions)."""
        std = self.stddev(step)
        with bn_step(self.actor, self.modes, "actor_i"), self.autocast():
            action = self.actor(obs, std).sample(self.generators, clip=self.config.stddev_clip)
        # Critic-I: policy rows, plus floor(rho*B) replay rows that only shape
        # the batch statistics (method.md §4); the loss reads the policy rows alone.
        # Under critic_i_stats=replay_batch Critic-II's pairs (s, a) follow them, for their statistics alone.
        obs_parts, action_parts = [obs], [action]
        if mix_obs.shape[1] > 0:
            obs_parts.append(mix_obs)
            action_parts.append(mix_action)
        reference_from = None
        if "replay_batch" in self.critic_i_stats:
            reference_from = sum(part.shape[1] for part in obs_parts)
            obs_parts.append(obs)
            action_parts.append(replay_action)
        critic_obs = torch.cat(obs_parts, dim=1) if len(obs_parts) > 1 else obs
        critic_action = torch.cat(action_parts, dim=1) if len(action_parts) > 1 else action
        # The actor loss needs dQ/da only: critic weight gradients would be
        # discarded by the next critic update (as in DrQ-v2), so skip computing them.
        self.critic.requires_grad_(False)
        for layer in self._critic_bn:
            layer.record_batch_stats = True
        try:
            with bn_critic_i(self.critic, self.modes, self.critic_i_stats, reference_from), self.autocast():
                q1, q2 = self.critic(critic_obs, critic_action)
        finally:
            self.critic.requires_grad_(True)
            for layer in self._critic_bn:
                layer.record_batch_stats = False
        self._critic_i_stats = None  # the saved Critic-I statistics are now this update's (critic_i_statistics)
        n = obs.shape[1]
        actor_loss = -torch.min(q1[:, :n], q2[:, :n]).to(self.dtype).mean(dim=(1, 2))
        self.actor_opt.zero_grad()
        actor_loss.sum().backward()
        self.actor_opt.step()
        metrics = {
            m.ACTOR_LOSS: actor_loss.detach(),
            m.ACTOR_STD: torch.full((self.k,), float(std), device=self.device),
        }
        if self._critic_bn:
            # RMS over features of (batch mean - running mean)/sqrt(running var + eps) at each
            # critic BN layer in the Critic-I forward, read before the layer ran; mean over layers.
            metrics[m.BN_MISMATCH] = torch.stack([layer.recorded["distance"] for layer in self._critic_bn]).mean(dim=0)
        return metrics

    @torch.no_grad()
    def update_target(self) -> None:
        if not self.uses_target_network:
            return
        tau = self.config.critic_target_tau
        online_params: list[torch.Tensor] = list(self.critic.parameters())
        target_params: list[torch.Tensor] = list(self.critic_target.parameters())
        torch._foreach_lerp_(target_params, online_params, tau)
        copy, soft = self._target_stats_members["copy"], self._target_stats_members["soft"]
        # All "independent" members: as released, the target's running stats follow only its own T forwards.
        if len(copy) or len(soft):
            for online, target in zip(self._critic_bn, bn_layers(self.critic_target)):
                for name in ("running_mean", "running_var"):
                    source, dest = getattr(online, name), getattr(target, name)
                    if len(copy):
                        dest.index_copy_(0, copy, source.index_select(0, copy))
                    if len(soft):
                        mixed = torch.lerp(dest.index_select(0, soft), source.index_select(0, soft), tau)
                        dest.index_copy_(0, soft, mixed)
        if len(self._target_stats_members["recalibrate"]) and self._critic_bn:
            self.recalibrate_target_statistics()

    @torch.no_grad()
    def recalibrate_target_statistics(self) -> None:
        """``target_bn_stats=recalibrate``: each such member's target critic BN layers get, as running statistics,
        the batch statistics of the target critic's own forward on the latest update's (s', a') at its current
        weights (mean, and the unbiased variance a train-mode forward moves the running one with), each layer's
        from its input as that forward computes it: every layer normalizes with its own batch statistics, Batch
        Renormalization's r and d left out (they pull towards the running statistics being replaced). The other
        members' statistics are left exactly as they were."""
        if self._critic_iii_inputs is None:
            raise RuntimeError("target_bn_stats=recalibrate needs an update's Critic-III inputs (update_critic)")
        members = self._target_stats_members["recalibrate"]
        layers = cast("list[PackedBatchNorm1d]", bn_layers(self.critic_target))
        renorm_bounds = [layer.renorm_bounds for layer in layers]
        for layer in layers:
            layer.record_batch_stats, layer.renorm_bounds = True, None
        try:
            with frozen_bn_statistics(self.critic_target), bn_train_mode(self.critic_target, True), self.autocast():
                self.critic_target(*self._critic_iii_inputs)
            statistics = [layer.batch_stats() for layer in layers]
        finally:
            for layer, bounds in zip(layers, renorm_bounds):
                layer.record_batch_stats, layer.renorm_bounds, layer.recorded = False, bounds, {}
        n = self._critic_iii_inputs[0].shape[1]
        for layer, (mean, var) in zip(layers, statistics):
            layer.running_mean.index_copy_(0, members, mean.index_select(0, members).to(layer.running_mean))
            unbiased = var.index_select(0, members) * (n / max(n - 1, 1))
            layer.running_var.index_copy_(0, members, unbiased.to(layer.running_var))

    # ------------------------------------------------------------ one member's checkpoint
    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member k's networks, BN statistics, optimizers and random stream, in a single trial's format."""
        state: dict[str, Any] = {
            name: {key: value[k].detach().cpu().clone() for key, value in getattr(self, name).state_dict().items()}
            for name in NETWORKS
        }
        for name in OPTIMIZERS:
            optimizer = getattr(self, name)
            if optimizer is not None:
                state[name] = optimizer.member_state_dict(k)
        state["generator"] = self.generators[k].get_state()
        if self.pixels:
            state["feature_order"] = FEATURE_ORDER
        stats = self.critic_i_statistics()
        if stats is not None:  # so a resumed trial measures its next Q-bias as an uninterrupted one does
            state["critic_i_stats"] = [
                (mean[k].detach().cpu().clone(), var[k].detach().cpu().clone()) for mean, var in stats
            ]
        return state

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Any]) -> None:
        """Member k from ``state`` (``member_state_dict``'s layout; the parts it has: a test may load some)."""
        for name in NETWORKS:
            if name not in state:
                continue
            current = getattr(self, name).state_dict()
            missing = set(current) - set(state[name])
            if missing:
                raise KeyError(f"checkpoint of member {k} lacks {name} entries {sorted(missing)[:3]}")
            for key, value in current.items():
                value[k].copy_(state[name][key])
        for name in OPTIMIZERS:
            optimizer = getattr(self, name)
            if optimizer is not None and name in state:
                optimizer.load_member_state_dict(k, state[name])
        if "generator" in state:
            self.generators[k].set_state(state["generator"])
        stats = self.critic_i_statistics()
        if stats is not None:
            for (mean, var), (saved_mean, saved_var) in zip(stats, state["critic_i_stats"]):
                mean[k].copy_(saved_mean)
                var[k].copy_(saved_var)


def _rows(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """The first n rows of every member; the tensor itself when it has exactly n, since a full
    slice still costs a zero-filled gradient buffer and a copy in the backward pass."""
    return tensor if tensor.shape[1] == n else tensor[:, :n]
