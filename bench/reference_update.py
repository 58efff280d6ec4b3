"""A reference-style DrQ-v2 update, for side-by-side timing only.

It does what facebookresearch/drqv2's ``update`` does, the way it does it:
float conversion of the whole batch, bilinear ``grid_sample`` random shift,
NCHW encoder, encoder and critic optimizers stepped separately, the actor loss
back-propagated into the critic's weights too, PyTorch's default (unfused)
Adam, one plain ``nn.Module`` per network (no packing).  Networks and
hyper-parameters are this project's (MA-BN critic: BatchNorm1d after each hidden
Linear), so the only differences from ``agent.drqv2`` are the implementation
choices measured.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent.bn_modes import step_is_train
from contract.config import TrialConfig


@contextmanager
def bn_step(module: nn.Module, mode: str, step: str) -> Iterator[None]:
    """The step's BN mode on plain nn.BatchNorm1d layers, as the authors' code sets it."""
    layers = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d)]
    for layer in layers:
        layer.train(step_is_train(mode, step))
    try:
        yield
    finally:
        for layer in layers:
            layer.eval()


def _mlp(in_dim: int, hidden: int, out_dim: int, norm: str) -> nn.Sequential:
    def normalization() -> nn.Module:
        return (
            nn.BatchNorm1d(hidden)
            if norm == "batch_norm"
            else nn.LayerNorm(hidden)
            if norm == "layer_norm"
            else nn.Identity()
        )

    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        normalization(),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        normalization(),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Conv2d):
        gain = nn.init.calculate_gain("relu") if isinstance(module, nn.Conv2d) else 1.0
        nn.init.orthogonal_(module.weight.data, gain)
        if module.bias is not None:
            module.bias.data.fill_(0.0)


class Encoder(nn.Module):
    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        self.convnet = nn.Sequential(
            nn.Conv2d(obs_shape[0], 32, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1),
            nn.ReLU(),
        )
        side = (obs_shape[1] - 3) // 2 + 1 - 6
        self.repr_dim = 32 * side * side
        self.apply(_init)


class TruncatedNormal:
    def __init__(self, mean: torch.Tensor, std: float):
        self.mean, self.std = mean, std

    def sample(self, clip: float) -> torch.Tensor:
        noise = (torch.randn_like(self.mean) * self.std).clamp(-clip, clip)
        x = self.mean + noise
        return x - x.detach() + x.clamp(-1 + 1e-6, 1 - 1e-6).detach()


class Actor(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int, norm: str):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = _mlp(feature_dim, hidden_dim, action_dim, norm)
        self.apply(_init)

    def forward(self, obs: torch.Tensor, std: float) -> TruncatedNormal:
        return TruncatedNormal(torch.tanh(self.policy(self.trunk(obs))), std)


class Critic(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int, norm: str):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.q1 = _mlp(feature_dim + action_dim, hidden_dim, 1, norm)
        self.q2 = _mlp(feature_dim + action_dim, hidden_dim, 1, norm)
        self.apply(_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_action = torch.cat([self.trunk(obs), action], dim=-1)
        return self.q1(h_action), self.q2(h_action)


def grid_sample_shift(x: torch.Tensor, pad: int = 4, shift: torch.Tensor | None = None) -> torch.Tensor:
    """DrQ-v2's random shift as bilinear grid_sample; ``shift`` (n, 2) integer offsets, drawn when None."""
    n, _, h, _ = x.shape
    x = F.pad(x, (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=x.device)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2).unsqueeze(0).repeat(n, 1, 1, 1)
    if shift is None:
        shift = torch.randint(0, 2 * pad + 1, size=(n, 2), device=x.device)
    offset = shift.view(n, 1, 1, 2).to(x.dtype) * (2.0 / (h + 2 * pad))
    return F.grid_sample(x, base_grid + offset, padding_mode="zeros", align_corners=False)


class ReferenceUpdate:
    def __init__(
        self,
        config: TrialConfig,
        obs_shape: tuple[int, ...],
        action_dim: int,
        device: torch.device = torch.device("cpu"),
    ):
        self.config = config
        self.device = device
        self.mode = config.resolved_bn_mode
        self.encoder = Encoder(obs_shape).to(device)
        args = (self.encoder.repr_dim, action_dim, config.feature_dim, config.hidden_dim)
        self.actor = Actor(*args, config.actor_norm).to(device)
        self.critic = Critic(*args, config.critic_norm).to(device)
        self.critic_target = Critic(*args, config.critic_norm).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder.convnet(obs / 255.0 - 0.5).view(obs.shape[0], -1)

    def update(self, batch: dict[str, np.ndarray], std: float = 0.2) -> None:
        obs, next_obs = (torch.as_tensor(batch[k], device=self.device).float() for k in ("obs", "next_obs"))
        action, reward, discount = (
            torch.as_tensor(batch[k], device=self.device) for k in ("action", "reward", "discount")
        )
        obs, next_obs = grid_sample_shift(obs), grid_sample_shift(next_obs)
        obs = self.encode(obs)
        with torch.no_grad():
            next_obs = self.encode(next_obs)
            with bn_step(self.actor, self.mode, "actor_ii"):
                next_action = self.actor(next_obs, std).sample(clip=self.config.stddev_clip)
            with bn_step(self.critic_target, self.mode, "critic_iii"):
                tq1, tq2 = self.critic_target(next_obs, next_action)
            target = reward + discount * torch.min(tq1, tq2)
        with bn_step(self.critic, self.mode, "critic_ii"):
            q1, q2 = self.critic(obs, action)
        loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()
        obs = obs.detach()
        with bn_step(self.actor, self.mode, "actor_i"):
            policy_action = self.actor(obs, std).sample(clip=self.config.stddev_clip)
        with bn_step(self.critic, self.mode, "critic_i"):
            q1, q2 = self.critic(obs, policy_action)
        actor_loss = -torch.min(q1, q2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for online, target in zip(self.critic.parameters(), self.critic_target.parameters()):
                target.data.lerp_(online.data, self.config.critic_target_tau)
