"""DrQ-v2 with mode-aware batch normalization.

``update(batch, step) -> metrics`` is the whole learner: it knows nothing of the
loop, logging or checkpoint files.  Each forward pass of an update runs inside
``bn_step(network, mode, step_name)``, which is the only place BN modes are set.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent.bn_modes import bn_layers, bn_step, bn_train_mode, frozen_bn_statistics
from agent.config import TrialConfig
from agent.networks import Actor, Critic, Encoder, RandomShift, chw_to_hwc_columns
from agent.schedules import parse_schedule

# How the encoder's output is flattened for the trunks (Encoder.forward). Checkpoints
# without this key were written before the change from DrQ-v2's (C, H, W) order and
# are rearranged on load, so an interrupted trial resumes with the same function.
FEATURE_ORDER = "hwc"


class Diverged(RuntimeError):
    """A loss or Q value became non-finite."""


def make_optimizer(config: TrialConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    # fused kernels: the same update rule, one pass over all tensors (CPU and CUDA).
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.sgd_momentum, fused=True)
    return torch.optim.Adam(params, lr=lr, fused=True)


class DrQV2Agent:
    def __init__(self, config: TrialConfig, obs_shape: tuple[int, ...], action_dim: int, device: torch.device):
        self.config = config
        self.device = device
        self.mode = config.resolved_bn_mode
        self.pixels = config.obs_type == "pixels"
        self.action_dim = action_dim
        self.stddev = parse_schedule(config.stddev_schedule)
        norm_args = (config.feature_dim, config.hidden_dim)
        bn_args = (config.bn_momentum, config.bn_eps)
        if self.pixels:
            self.encoder: nn.Module = Encoder(obs_shape, channels_last=config.channels_last).to(device)
            repr_dim = self.encoder.repr_dim
            self.aug: nn.Module = RandomShift(pad=4)
        else:
            self.encoder = nn.Identity()
            repr_dim = int(np.prod(obs_shape))
            self.aug = nn.Identity()
        self.actor = Actor(repr_dim, action_dim, *norm_args, config.actor_norm, *bn_args).to(device)
        self.critic = Critic(repr_dim, action_dim, *norm_args, config.critic_norm, *bn_args).to(device)
        self.critic_target = Critic(repr_dim, action_dim, *norm_args, config.critic_norm, *bn_args).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        critic_lr = config.critic_lr or config.lr
        self.actor_opt = make_optimizer(config, self.actor.parameters(), config.actor_lr or config.lr)
        self.critic_opt = make_optimizer(config, self.critic.parameters(), critic_lr)
        self.encoder_opt = (make_optimizer(config, self.encoder.parameters(), critic_lr) if self.pixels else None)
        # Outside an update every BN layer sits in eval mode: acting, evaluation
        # and Q-bias never move running statistics unless a step asks for T.
        for net in (self.encoder, self.actor, self.critic, self.critic_target):
            net.eval()
        self._critic_i_bn = bn_layers(self.critic)
        self._staging: dict[str, torch.Tensor] = {}  # pinned host buffers (CUDA only)

    # ------------------------------------------------------------ acting
    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        tensor = torch.as_tensor(obs, device=self.device)
        return tensor if self.pixels else tensor.float()

    @torch.inference_mode()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One action; BN layers run on running statistics (eval mode) whatever the mode string."""
        with bn_train_mode(self.actor, False):
            features = self.encoder(self.obs_tensor(obs).unsqueeze(0))
            dist = self.actor(features, self.stddev(step))
            if eval_mode:
                action = dist.mean
            else:
                action = dist.sample(clip=None)
                if step < self.config.num_expl_steps:
                    action.uniform_(-1.0, 1.0)
        return action[0].cpu().numpy()

    @torch.inference_mode()
    def q_values(self, obs: np.ndarray, action: np.ndarray) -> np.ndarray:
        """min(Q1, Q2) of the online critic, BN in Critic-I's mode, running stats left untouched."""
        obs_t = self.obs_tensor(obs)
        with frozen_bn_statistics(self.critic), bn_step(self.critic, self.mode, "critic_i"):
            q1, q2 = self.critic(self.encoder(obs_t), torch.as_tensor(action, device=self.device).float())
        return torch.min(q1, q2).squeeze(-1).cpu().numpy()

    # ------------------------------------------------------------ learning
    def batch_to_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Pixels stay uint8 until after the augmentation (4x less memory traffic).

        On CUDA the batch goes through reused pinned staging buffers, so the
        host-to-device copy is asynchronous. Reusing a buffer is safe because every
        update ends by reading its metrics (``.item()``), which waits for the copy.
        """
        if self.device.type == "cuda":
            tensors = {}
            for key, value in batch.items():
                staging = self._staging.get(key)
                if staging is None or staging.shape != value.shape:
                    staging = self._staging[key] = torch.empty(value.shape, dtype=torch.from_numpy(value).dtype,
                                                               pin_memory=True)
                staging.copy_(torch.from_numpy(value))
                tensors[key] = staging.to(self.device, non_blocking=True)
        else:
            tensors = {k: torch.as_tensor(v) for k, v in batch.items()}
        if not self.pixels:
            for key in ("obs", "next_obs"):
                tensors[key] = tensors[key].float()
        return tensors

    def update(self, batch: dict[str, np.ndarray], step: int) -> dict[str, float]:
        """One DrQ-v2 update. ``batch`` may carry more rows than batch_size: those feed buffer mixing only."""
        start = time.perf_counter()
        b = self.config.batch_size
        t = self.batch_to_tensors(batch)
        all_obs = self.encoder(self.aug(t["obs"]))
        obs = _rows(all_obs, b)
        with torch.no_grad():
            next_obs = self.encoder(self.aug(_rows(t["next_obs"], b)))
        metrics = self.update_critic(obs, _rows(t["action"], b), _rows(t["reward"], b), _rows(t["discount"], b),
                                     next_obs, step)
        mix_obs = all_obs[:self.config.mix_rows].detach()
        mix_action = t["action"][:self.config.mix_rows]
        metrics.update(self.update_actor(obs.detach(), step, mix_obs, mix_action))
        self.update_target()
        metrics["perf/update_ms"] = (time.perf_counter() - start) * 1000.0
        return metrics

    def update_critic(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                      discount: torch.Tensor, next_obs: torch.Tensor, step: int) -> dict[str, float]:
        with torch.no_grad():
            with bn_step(self.actor, self.mode, "actor_ii"):
                next_action = self.actor(next_obs, self.stddev(step)).sample(clip=self.config.stddev_clip)
            with bn_step(self.critic_target, self.mode, "critic_iii"):
                target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2)
        with bn_step(self.critic, self.mode, "critic_ii"):
            q1, q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        if self.encoder_opt is not None:
            self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        if self.encoder_opt is not None:
            self.encoder_opt.step()
        metrics = {"losses/critic": critic_loss.item(), "q/mean": q1.mean().item()}
        _check_finite(metrics)
        return metrics

    def update_actor(self, obs: torch.Tensor, step: int, mix_obs: torch.Tensor,
                     mix_action: torch.Tensor) -> dict[str, float]:
        std = self.stddev(step)
        with bn_step(self.actor, self.mode, "actor_i"):
            action = self.actor(obs, std).sample(clip=self.config.stddev_clip)
        # Critic-I: policy rows, plus floor(rho*B) replay rows that only shape
        # the batch statistics (SPEC §4); the loss reads the policy rows alone.
        critic_obs = torch.cat([obs, mix_obs]) if len(mix_obs) else obs
        critic_action = torch.cat([action, mix_action]) if len(mix_action) else action
        mismatch = self._watch_critic_i_statistics()
        # The actor loss needs dQ/da only: critic weight gradients would be
        # discarded by the next critic update (as in DrQ-v2), so skip computing them.
        self.critic.requires_grad_(False)
        try:
            with bn_step(self.critic, self.mode, "critic_i"):
                q1, q2 = self.critic(critic_obs, critic_action)
        finally:
            self.critic.requires_grad_(True)
            for handle in mismatch["handles"]:
                handle.remove()
        actor_loss = -torch.min(q1[:len(obs)], q2[:len(obs)]).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        metrics = {"losses/actor": actor_loss.item(), "actor/std": float(std)}
        if mismatch["distances"]:
            metrics["bn/critic_i_batch_vs_running"] = float(np.mean(mismatch["distances"]))
        _check_finite(metrics)
        return metrics

    def _watch_critic_i_statistics(self) -> dict[str, list]:
        """Record, per critic BN layer, how far the Critic-I batch statistics sit from the running ones.

        Distance: RMS over features of (batch_mean - running_mean) / sqrt(running_var + eps),
        read before the layer runs (so before a T step moves the running statistics).
        """
        record: dict[str, list] = {"handles": [], "distances": []}

        def hook(layer: nn.BatchNorm1d, inputs: tuple[torch.Tensor]) -> None:
            with torch.no_grad():
                batch_mean = inputs[0].mean(dim=0)
                scaled = (batch_mean - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps)
                record["distances"].append(scaled.pow(2).mean().sqrt().item())

        for layer in self._critic_i_bn:
            record["handles"].append(layer.register_forward_pre_hook(hook))
        return record

    @torch.no_grad()
    def update_target(self) -> None:
        tau = self.config.critic_target_tau
        for online, target in zip(self.critic.parameters(), self.critic_target.parameters()):
            target.lerp_(online, tau)
        how = self.config.target_bn_stats
        if how == "independent":
            return  # as released: the target's running stats follow only its own T forwards
        for online, target in zip(bn_layers(self.critic), bn_layers(self.critic_target)):
            if how == "copy":
                target.running_mean.copy_(online.running_mean)
                target.running_var.copy_(online.running_var)
            else:  # soft
                target.running_mean.lerp_(online.running_mean, tau)
                target.running_var.lerp_(online.running_var, tau)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                 "critic_target": self.critic_target.state_dict(), "encoder": self.encoder.state_dict(),
                 "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict()}
        if self.encoder_opt is not None:
            state["encoder_opt"] = self.encoder_opt.state_dict()
        if self.pixels:
            state["feature_order"] = FEATURE_ORDER
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.pixels and state.get("feature_order") != FEATURE_ORDER:
            state = self._from_chw_feature_order(state)
        for name in ("actor", "critic", "critic_target", "encoder", "actor_opt", "critic_opt", "encoder_opt"):
            if name in state:
                getattr(self, name).load_state_dict(state[name])

    def _from_chw_feature_order(self, state: dict[str, Any]) -> dict[str, Any]:
        """Rearrange the trunk weights (and their optimizer moments) of a (C, H, W)-order checkpoint."""
        chw = self.encoder.out_shape
        state = dict(state)
        for net in ("actor", "critic", "critic_target"):
            weights = dict(state[net])
            weights["trunk.0.weight"] = chw_to_hwc_columns(weights["trunk.0.weight"], chw)
            state[net] = weights
        for opt in ("actor_opt", "critic_opt"):  # the trunk weight is each optimizer's first parameter
            opt_state = {**state[opt], "state": dict(state[opt]["state"])}
            first = opt_state["param_groups"][0]["params"][0]
            if first in opt_state["state"]:
                opt_state["state"][first] = {
                    key: chw_to_hwc_columns(value, chw) if torch.is_tensor(value) and value.dim() == 2 else value
                    for key, value in opt_state["state"][first].items()}
            state[opt] = opt_state
        return state


def _rows(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """The first n rows; the tensor itself when it has exactly n, since a full slice
    still costs a zero-filled gradient buffer and a copy in the backward pass."""
    return tensor if len(tensor) == n else tensor[:n]


def _check_finite(metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
        raise Diverged(f"non-finite values: {bad}")
