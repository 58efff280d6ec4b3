"""A reference-style DrQ-v2 update, for side-by-side timing only.

It does what facebookresearch/drqv2's ``update`` does, the way it does it:
float conversion of the whole batch, bilinear ``grid_sample`` random shift,
NCHW encoder, encoder and critic optimizers stepped separately, the actor loss
back-propagated into the critic's weights too, PyTorch's default (unfused)
Adam.  Networks and hyper-parameters are this project's (MA-BN critic), so the
only differences from ``agent.drqv2`` are the implementation choices measured.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agent.bn_modes import bn_step
from agent.config import TrialConfig
from agent.networks import Actor, Critic, Encoder


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
    def __init__(self, config: TrialConfig, obs_shape: tuple[int, ...], action_dim: int,
                 device: torch.device = torch.device("cpu")):
        self.config = config
        self.device = device
        self.mode = config.resolved_bn_mode
        self.encoder = Encoder(obs_shape, channels_last=False).to(device)
        args = (self.encoder.repr_dim, action_dim, config.feature_dim, config.hidden_dim)
        bn = (config.bn_momentum, config.bn_eps)
        self.actor = Actor(*args, config.actor_norm, *bn).to(device)
        self.critic = Critic(*args, config.critic_norm, *bn).to(device)
        self.critic_target = Critic(*args, config.critic_norm, *bn).to(device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder.convnet(obs / 255.0 - 0.5).view(obs.shape[0], -1)

    def update(self, batch: dict[str, np.ndarray], std: float = 0.2) -> None:
        obs, next_obs = (torch.as_tensor(batch[k], device=self.device).float() for k in ("obs", "next_obs"))
        action, reward, discount = (torch.as_tensor(batch[k], device=self.device)
                                    for k in ("action", "reward", "discount"))
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
