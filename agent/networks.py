"""DrQ-v2 networks (method.md §1) with the normalization options of method.md §2, for a pack of K members.

Every network holds the parameters of K independent members stacked on a
leading dimension and runs all of them as one set of batched kernels
(issue #9): linear layers are one ``baddbmm``, the convolutions one grouped
convolution, LayerNorm and BatchNorm normalize each member on its own. Members
never mix: member k's output depends only on member k's parameters and inputs,
so a pack of K computes what K separate trials compute, and K = 1 is one trial.

Activations are laid out ``(K, N, features)`` up to the trunks. In the MLPs after them, where
BatchNorm sits, a pack of several members lays them out ``(K, features, N)`` ("features first"):
a member's feature is then one channel of a native BatchNorm over a free view ``(1, K*features, N)``
and a linear layer is ``W @ x``, so no layer reorders memory. A pack of one keeps ``(1, N, features)``,
where BatchNorm over ``(N, features)`` is a free view too and PyTorch's rows-layout kernel is 3x
faster than its channels-first one (measured on CPU): a trial alone runs the kernels it ran before
packing. Pixel inputs are ``(K, N, C, H, W)``; the encoder runs on ``(N, K*C, H, W)`` (member k's
channels are channel group k), where its optional BatchNorm2d is per member per channel.
A member's slice of any parameter or buffer (``tensor[k]``) has exactly the
shape and name of the single-network layer it replaces (``nn.Linear``,
``nn.BatchNorm1d``, ...), so a member's state dict is the same as a trial's was
before packing (``member_state_dict`` / ``load_member_state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from contract.config import TrialConfig


def _orthogonal_(weight: torch.Tensor, generators: Sequence[torch.Generator], gain: float = 1.0) -> None:
    """DrQ-v2's orthogonal init, each member from its own generator (so a member starts the same in any pack)."""
    with torch.no_grad():
        for k, generator in enumerate(generators):
            nn.init.orthogonal_(weight[k], gain, generator=generator)


class PackedLinear(nn.Module):
    """K independent ``nn.Linear(in_dim, out_dim)``: weight (K, out, in), bias (K, out).

    Input and output (K, N, features), or (K, features, N) with ``features_first``.
    """

    def __init__(self, k: int, in_dim: int, out_dim: int, features_first: bool = False):
        super().__init__()
        self.features_first = features_first
        # The weight's memory is laid out as the matmul reads it: W (K, out, in) for W @ x, W^T (K, in, out)
        # for x @ W^T (a (K, out, in) view of it). Then its gradient comes out of the batched matmul in the
        # parameter's own layout; otherwise autograd copied every weight gradient (~12% of a state update).
        storage = torch.empty(k, out_dim, in_dim) if features_first else torch.empty(k, in_dim, out_dim).transpose(1, 2)
        self.weight = nn.Parameter(storage)
        self.bias = nn.Parameter(torch.zeros(k, out_dim))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        _orthogonal_(self.weight, generators)
        with torch.no_grad():
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.weight)
        if self.features_first:  # x (K, in, N), or BatchNorm's (1, K*in, N)
            return torch.baddbmm(self.bias.unsqueeze(2), self.weight, x.view(k, -1, x.shape[-1]))
        # x (K, N, in), or BatchNorm's (N, in) of a pack of one
        return torch.baddbmm(self.bias.unsqueeze(1), x.view(k, -1, x.shape[-1]), self.weight.transpose(1, 2))


class PackedLayerNorm(nn.Module):
    """K independent ``nn.LayerNorm(width)`` (each row of each member normalized over its features).

    Input (K, N, width), or (K, width, N) with ``features_first`` (normalized through a transposed copy).
    """

    def __init__(self, k: int, width: int, eps: float = 1e-5, features_first: bool = False):
        super().__init__()
        self.eps = eps
        self.features_first = features_first
        self.weight = nn.Parameter(torch.ones(k, width))
        self.bias = nn.Parameter(torch.zeros(k, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features_first:
            return self._rows_last(x.transpose(1, 2)).transpose(1, 2).contiguous()
        return self._rows_last(x)

    def _rows_last(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.weight) == 1:  # one member: the fused affine kernel
            return F.layer_norm(x, x.shape[-1:], self.weight[0], self.bias[0], self.eps)
        return torch.addcmul(
            self.bias.unsqueeze(1), F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight.unsqueeze(1)
        )


class PackedBatchNorm(nn.Module):
    """What K independent BatchNorms share whatever their input's layout: per-member affine parameters and
    running statistics (K, width), and each member's own train/eval flag.

    ``member_train`` (one bool per member) is set by ``agent.bn_modes`` for each
    forward pass: a train member normalizes with its batch statistics and moves
    its running statistics (momentum, unbiased variance, as ``nn.BatchNorm1d/2d``);
    an eval member normalizes with its running statistics and leaves them alone.
    A member's slice of every parameter and buffer has the shape and name of the
    ``nn.BatchNorm`` it replaces.

    ``renorm_bounds``: None for BatchNorm; for Batch Renormalization (Ioffe 2017; the ``PackedBatchRenorm``
    layers) the clipping bounds (r_max, d_max) in force, set by the agent each update (``renorm_bounds_at``). A
    train member then normalizes with its batch statistics corrected towards the running ones,
    x -> (x - mu_B) / sigma_B * r + d, r = clip(sigma_B / sigma, 1/r_max, r_max), d = clip((mu_B - mu) / sigma,
    -d_max, d_max), sigma = sqrt(running_var + eps), sigma_B = sqrt(batch var + eps), r and d without gradient,
    taken before the batch moves the running statistics (method.md §2). Its eval mode is BatchNorm's.
    """

    # Buffers (register_buffer): declared so that attribute reads are tensors, not nn.Module.__getattr__'s union.
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, k: int, width: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(k, width))
        self.bias = nn.Parameter(torch.zeros(k, width))
        self.register_buffer("running_mean", torch.zeros(k, width))
        self.register_buffer("running_var", torch.ones(k, width))
        self.register_buffer("num_batches_tracked", torch.zeros(k, dtype=torch.long))
        self.member_train: tuple[bool, ...] = (False,) * k
        self.renorm_bounds: tuple[float, float] | None = None
        # Per-member flags as (K, 1) masks on the layer's device, made once per distinct value (a pack has a few:
        # one per update step's modes): a fresh one per forward was a host-to-device copy and, on CUDA, a sync.
        self._masks: dict[tuple[tuple[bool, ...], torch.device], torch.Tensor] = {}

    def _mask(self, flags: tuple[bool, ...], device: torch.device) -> torch.Tensor:
        mask = self._masks.get((flags, device))
        if mask is None:
            mask = self._masks[(flags, device)] = torch.tensor(flags, device=device).view(-1, 1)
        return mask

    def _renormalizes_in_train_mode(self) -> bool:
        """Some member runs Batch Renormalization's train mode, which no native BatchNorm kernel computes."""
        return self.renorm_bounds is not None and any(self.member_train)

    def _native(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Every member in one mode: member k's features are channels k*width..(k+1)*width of one native
        BatchNorm over ``x`` (its layout puts them there), so its statistics are member k's own."""
        out = F.batch_norm(
            x,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.view(-1),
            self.bias.view(-1),
            training=train,
            momentum=self.momentum,
            eps=self.eps,
        )
        if train:
            self.num_batches_tracked.add_(1)
        return out

    def _statistics(
        self,
        batch_mean: torch.Tensor,
        batch_var: torch.Tensor,
        count: int | torch.Tensor,
        moves: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Members in different modes: per member, the (mean, var) to normalize with, (K, width) each (batch
        statistics for train members, running ones for eval members), and Batch Renormalization's (r, d) (None
        for BatchNorm; 1 and 0 for eval members). The running statistics of the members in ``moves`` (a (K, 1)
        mask; default: the train members) move as a native BatchNorm's would over ``count`` values per feature
        (an int, or per member (K, 1)). Differentiable in the batch statistics."""
        train = self._mask(self.member_train, batch_mean.device)
        moves = train if moves is None else moves
        correction = None
        if self.renorm_bounds is not None:
            with torch.no_grad():  # from the running statistics the batch has not moved yet
                r_max, d_max = self.renorm_bounds
                running_std = torch.sqrt(self.running_var + self.eps)
                r = (torch.sqrt(batch_var + self.eps) / running_std).clamp(1.0 / r_max, r_max)
                d = ((batch_mean - self.running_mean) / running_std).clamp(-d_max, d_max)
                correction = (torch.where(train, r, 1.0), torch.where(train, d, 0.0))
        mean = torch.where(train, batch_mean, self.running_mean)
        var = torch.where(train, batch_var, self.running_var)
        with torch.no_grad():
            m = self.momentum
            if isinstance(count, torch.Tensor):
                unbiased = batch_var.detach() * (count / (count - 1).clamp(min=1))
            else:
                unbiased = batch_var.detach() * (count / max(count - 1, 1))
            self.running_mean.copy_(
                torch.where(moves, torch.lerp(self.running_mean, batch_mean.detach(), m), self.running_mean)
            )
            self.running_var.copy_(torch.where(moves, torch.lerp(self.running_var, unbiased, m), self.running_var))
            self.num_batches_tracked.add_(moves.view(-1).long())
        return mean, var, correction


class PackedBatchNorm1d(PackedBatchNorm):
    """K independent ``nn.BatchNorm1d(width)``, each member in its own train/eval mode.

    Input (K, width, N) for a pack of several, (1, N, width) for a pack of one (see the module docstring).

    ``record_batch_stats``: when set, the forward also keeps, per member, the
    batch mean and (biased) variance (a train member's: those it normalized with)
    and the distance of the forward's own batch mean from the running mean before
    the layer ran (``bn/critic_i_batch_vs_running``).

    ``member_stats`` (one of ``contract.modes.CRITIC_I_STATS`` per member) and ``reference_from`` are set by
    ``agent.bn_modes.bn_critic_i`` for Critic-I: where a train member takes its batch statistics. The rows from
    ``reference_from`` on are the update's replay pairs (s, a): ``replay_batch`` members normalize every row
    with their statistics, the others with those of the rows before them.
    """

    def __init__(self, k: int, width: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(k, width, momentum, eps)
        self.record_batch_stats = False
        self.recorded: dict[str, torch.Tensor] = {}
        self.member_stats = ("mode",) * k
        self.reference_from: int | None = None

    @property
    def member_stats(self) -> tuple[str, ...]:
        return self._member_stats

    @member_stats.setter
    def member_stats(self, stats: tuple[str, ...]) -> None:
        # Decided once per assignment, not per forward: the default update (every member on its own batch
        # statistics) keeps the native kernels' path.
        self._member_stats, self._own_statistics = stats, all(s == "mode" for s in stats)

    def batch_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per member, the batch mean and biased variance of the last recorded forward (``record_batch_stats``):
        those a train member normalized with (for Batch Renormalization, the mean and variance that normalize
        the same way without r and d)."""
        if "normalized_var" in self.recorded:
            return self.recorded["normalized_mean"], self.recorded["normalized_var"]
        with torch.no_grad():
            return _batch_mean_var(self.recorded["input"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = len(self.weight) == 1
        if self._renormalizes_in_train_mode() or self.reference_from is not None or not self._own_statistics:
            return self._general(x, 1 if one else 2, self.record_batch_stats)
        if one:
            return self._one_member(x)
        k, width, n = x.shape
        if self.record_batch_stats:
            with torch.no_grad():
                mean = x.mean(dim=2)
                scaled = (mean - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
                # The input is kept, not its variance: a variance pass cost ~3% of a state update,
                # and only a consumer of the batch statistics (batch_stats) needs it.
                self.recorded = {"mean": mean, "input": x.detach(), "distance": scaled.pow(2).mean(dim=1).sqrt()}
        modes = set(self.member_train)
        if len(modes) == 1:
            # A free view (1, K*width, N): member k's features are channels k*width..(k+1)*width, their
            # statistics taken over the N rows. Returned as (1, K*width, N), not a view of it: the ReLU after
            # it then runs in place (an in-place op on a view makes autograd rebuild the base); the next
            # linear views it (K, width, N).
            return self._native(x.reshape(1, k * width, n), modes.pop())
        return self._general(x, 2, record=False)

    def _general(self, x: torch.Tensor, rows: int, record: bool) -> torch.Tensor:
        """Any mix of modes, statistics sources and Batch Renormalization, written out: ``x`` (K, width, N) with
        ``rows`` = 2, or a pack of one's (1, N, width) with ``rows`` = 1."""
        n = x.shape[rows]
        split = n if self.reference_from is None else self.reference_from
        own = x.narrow(rows, 0, split)
        batch_mean, batch_var = _batch_mean_var(own, rows)
        own_mean = batch_mean
        count: int | torch.Tensor = split
        moves = None
        if "running_noisy" in self.member_stats:
            noisy = self._mask(tuple(s == "running_noisy" for s in self.member_stats), x.device)
            noisy_mean, noisy_var = self._running_with_batch_noise(own, rows)
            batch_mean = torch.where(noisy, noisy_mean, batch_mean)
            batch_var = torch.where(noisy, noisy_var, batch_var)
            moves = self._mask(self.member_train, x.device) & ~noisy
        if self.reference_from is not None:
            reference_mean, reference_var = _batch_mean_var(x.narrow(rows, split, n - split), rows)
            replay = self._mask(tuple(s == "replay_batch" for s in self.member_stats), x.device)
            batch_mean = torch.where(replay, reference_mean, batch_mean)
            batch_var = torch.where(replay, reference_var, batch_var)
            count = torch.full_like(self.running_var[:, :1], split).masked_fill(replay, n - split)
        if "batch_stopgrad" in self.member_stats:
            stop = self._mask(tuple(s == "batch_stopgrad" for s in self.member_stats), x.device)
            batch_mean = torch.where(stop, batch_mean.detach(), batch_mean)
            batch_var = torch.where(stop, batch_var.detach(), batch_var)
        if record:
            with torch.no_grad():
                scaled = (own_mean - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
                distance = scaled.pow(2).mean(dim=1).sqrt()
        mean, var, correction = self._statistics(batch_mean, batch_var, count, moves)
        inv_std = torch.rsqrt(var + self.eps)
        if correction is None:
            out = (x - mean.unsqueeze(rows)) * inv_std.unsqueeze(rows)
        else:
            r, d = correction
            out = torch.addcmul(d.unsqueeze(rows), x - mean.unsqueeze(rows), (inv_std * r).unsqueeze(rows))
        if record:  # a train member's batch statistics are those it normalized with
            with torch.no_grad():
                kept_mean, kept_var = batch_mean.detach(), batch_var.detach()
                if correction is not None:  # (x - mean') / sqrt(var' + eps) is the same normalization
                    r, d = correction
                    kept_mean = kept_mean - d * torch.sqrt(kept_var + self.eps) / r
                    kept_var = (kept_var + self.eps) / r.square() - self.eps
                self.recorded = {"normalized_mean": kept_mean, "normalized_var": kept_var, "distance": distance}
        return torch.addcmul(self.bias.unsqueeze(rows), out, self.weight.unsqueeze(rows))

    @torch.no_grad()
    def _running_with_batch_noise(self, own: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``running_noisy``: the running statistics plus the sampling noise of the batch statistics of ``own``
        (method.md §3). The rows are i.i.d., so its two halves A and B are two independent batches:
        (mean_A - mean_B) / 2 has the covariance of the full batch's mean about its expectation (Sigma / N) and
        mean zero whatever that expectation is, and sqrt(var_A / var_B) the relative spread of its variance (to
        first order in 1/N) with a log of mean zero. Without gradient: the actor cannot move them."""
        half = own.shape[rows] // 2
        mean_a, var_a = _batch_mean_var(own.narrow(rows, 0, half), rows)
        mean_b, var_b = _batch_mean_var(own.narrow(rows, half, half), rows)
        ratio = torch.sqrt((var_a + self.eps) / (var_b + self.eps))
        return self.running_mean + (mean_a - mean_b) / 2, self.running_var * ratio

    def _one_member(self, x: torch.Tensor) -> torch.Tensor:
        """(1, N, width) rows: nn.BatchNorm1d's own computation; returns (N, width) for an in-place ReLU."""
        rows = x.view(-1, x.shape[-1])
        if self.record_batch_stats:
            with torch.no_grad():
                mean = rows.mean(dim=0, keepdim=True)
                scaled = (mean - self.running_mean) * torch.rsqrt(self.running_var + self.eps)
                self.recorded = {
                    "mean": mean,
                    "input": rows.detach().t().unsqueeze(0),
                    "distance": scaled.pow(2).mean(dim=1).sqrt(),
                }
        train = self.member_train[0]
        out = F.batch_norm(
            rows,
            self.running_mean[0],
            self.running_var[0],
            self.weight[0],
            self.bias[0],
            training=train,
            momentum=self.momentum,
            eps=self.eps,
        )
        if train:
            self.num_batches_tracked.add_(1)
        return out


class PackedBatchNorm2d(PackedBatchNorm):
    """K independent ``nn.BatchNorm2d(channels)`` over the encoder's grouped layout (N, K*channels, H, W):
    member k's channels are channel group k, each normalized over (N, H, W) with member k's statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modes = set(self.member_train)
        if len(modes) == 1 and not self._renormalizes_in_train_mode():
            return self._native(x, modes.pop())
        k, width = self.weight.shape
        batch_mean = x.mean(dim=(0, 2, 3))
        batch_var = (x - batch_mean.view(1, -1, 1, 1)).square().mean(dim=(0, 2, 3))
        mean, var, correction = self._statistics(
            batch_mean.view(k, width), batch_var.view(k, width), x.numel() // x.shape[1]
        )
        if correction is None:
            scale = self.weight * torch.rsqrt(var + self.eps)
            shift = self.bias - mean * scale
        else:
            r, d = correction
            scale = self.weight * torch.rsqrt(var + self.eps) * r
            shift = torch.addcmul(self.bias, self.weight, d) - mean * scale
        return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))


class PackedBatchRenorm1d(PackedBatchNorm1d):
    """K independent Batch Renormalization layers (Ioffe 2017) in the MLP layouts of ``PackedBatchNorm1d``;
    with r_max = 1 and d_max = 0 (the start of the warm-up) it computes BatchNorm."""

    def __init__(self, k: int, width: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(k, width, momentum, eps)
        self.renorm_bounds = (1.0, 0.0)


class PackedBatchRenorm2d(PackedBatchNorm2d):
    """K independent Batch Renormalization layers over the encoder's grouped layout of ``PackedBatchNorm2d``."""

    def __init__(self, k: int, width: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(k, width, momentum, eps)
        self.renorm_bounds = (1.0, 0.0)


def renorm_bounds_at(config: TrialConfig, step: int) -> tuple[float, float]:
    """Batch Renormalization's (r_max, d_max) at agent step ``step``: r_max rises linearly from 1 and d_max from 0
    to ``renorm_r_max`` and ``renorm_d_max`` over ``renorm_warmup_steps`` (Ioffe 2017's relaxation; method.md §2)."""
    progress = 1.0 if config.renorm_warmup_steps == 0 else min(step / config.renorm_warmup_steps, 1.0)
    return 1.0 + (config.renorm_r_max - 1.0) * progress, config.renorm_d_max * progress


def _batch_mean_var(x: torch.Tensor, rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member and feature, the mean and biased variance over dimension ``rows`` of (K, D, N) (``rows`` = 2) or
    (1, N, D) (``rows`` = 1). Differentiable."""
    mean = x.mean(dim=rows)
    return mean, (x - mean.unsqueeze(rows)).square().mean(dim=rows)


def features_first(k: int) -> bool:
    """The MLP layout of a pack of ``k`` (module docstring)."""
    return k > 1


def norm_layer(kind: str, k: int, width: int, bn_momentum: float, bn_eps: float) -> nn.Module:
    """The normalization of an MLP's hidden layer."""
    if kind == "batch_norm":
        return PackedBatchNorm1d(k, width, momentum=bn_momentum, eps=bn_eps)
    if kind == "batch_renorm":
        return PackedBatchRenorm1d(k, width, momentum=bn_momentum, eps=bn_eps)
    if kind == "layer_norm":
        return PackedLayerNorm(k, width, features_first=features_first(k))
    return nn.Identity()


def mlp(
    k: int, in_dim: int, hidden_dim: int, out_dim: int, norm: str, bn_momentum: float, bn_eps: float
) -> nn.Sequential:
    """Linear -> norm -> ReLU, twice, then the output Linear (norm never on the raw input), in the
    pack's MLP layout (``features_first(k)``)."""
    first = features_first(k)
    return nn.Sequential(
        PackedLinear(k, in_dim, hidden_dim, first),
        norm_layer(norm, k, hidden_dim, bn_momentum, bn_eps),
        nn.ReLU(inplace=True),
        PackedLinear(k, hidden_dim, hidden_dim, first),
        norm_layer(norm, k, hidden_dim, bn_momentum, bn_eps),
        nn.ReLU(inplace=True),
        PackedLinear(k, hidden_dim, out_dim, first),
    )


def to_mlp_layout(x: torch.Tensor) -> torch.Tensor:
    """(K, N, features) -> the MLP layout of a pack of K (a view)."""
    return x.transpose(1, 2) if features_first(x.shape[0]) else x


def from_mlp_layout(x: torch.Tensor) -> torch.Tensor:
    """An MLP's output -> (K, N, features) (a view)."""
    return x.transpose(1, 2) if features_first(x.shape[0]) else x


def trunk(k: int, repr_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(PackedLinear(k, repr_dim, feature_dim), PackedLayerNorm(k, feature_dim), nn.Tanh())


def init_linears(module: nn.Module, generators: Sequence[torch.Generator]) -> None:
    """Orthogonal weights, zero biases, in module order (the order DrQ-v2's ``apply`` visits them)."""
    for layer in module.modules():
        if isinstance(layer, PackedLinear):
            layer.reset_parameters(generators)


def group_pixels(obs: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(K, N, C, H, W) -> (N, K*C, H, W): member k's images are channel group k of one grouped convolution."""
    k, n, c, h, w = obs.shape
    if channels_last:
        return obs.permute(1, 3, 4, 0, 2).reshape(n, h, w, k * c).permute(0, 3, 1, 2)
    return obs.transpose(0, 1).reshape(n, k * c, h, w)


class PackedConv2d(nn.Module):
    """K independent ``nn.Conv2d(in_c, out_c, 3, stride)`` as one grouped convolution (groups = K).

    Input (N, K*in_c, H, W), output (N, K*out_c, H', W'): member k owns channel group k.
    """

    def __init__(self, k: int, in_c: int, out_c: int, stride: int):
        super().__init__()
        self.k, self.stride = k, stride
        self.weight = nn.Parameter(torch.empty(k, out_c, in_c, 3, 3))
        self.bias = nn.Parameter(torch.zeros(k, out_c))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        _orthogonal_(self.weight, generators, nn.init.calculate_gain("relu"))
        with torch.no_grad():
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.flatten(0, 1), self.bias.flatten(), stride=self.stride, groups=self.k)


class Encoder(nn.Module):
    """4 conv 3x3 layers of 32 channels, the first with stride 2; pixels scaled to [-0.5, 0.5].

    The K members' convolutions run as grouped convolutions over inputs laid out
    by ``group_pixels`` (or by the augmentation, which lays them out the same way).
    ``norm="batch_norm"`` puts a BatchNorm2d after each convolution, before its
    ReLU, where the MA-BN authors' ``EncoderBN`` has it (drqv2/drqv2.py), and
    ``norm="batch_renorm"`` a Batch Renormalization layer there; without either
    the module (and its state dict) is DrQ-v2's encoder.
    """

    CHANNELS = 32
    STRIDES = (2, 1, 1, 1)

    def __init__(
        self,
        k: int,
        obs_shape: tuple[int, ...],
        channels_last: bool = False,
        norm: str = "none",
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        self.k = k
        self.channels_last = channels_last
        c = self.CHANNELS
        layers: list[nn.Module] = []
        for in_c, stride in zip((obs_shape[0], c, c, c), self.STRIDES):
            layers.append(PackedConv2d(k, in_c, c, stride))
            if norm == "batch_norm":
                layers.append(PackedBatchNorm2d(k, c, momentum=bn_momentum, eps=bn_eps))
            elif norm == "batch_renorm":
                layers.append(PackedBatchRenorm2d(k, c, momentum=bn_momentum, eps=bn_eps))
            layers.append(nn.ReLU(inplace=True))
        self.convnet = nn.Sequential(*layers)
        self.out_shape = self.conv_shapes(obs_shape)[-1]  # (C, H, W) of a member's last conv
        self.repr_dim = math.prod(self.out_shape)

    @classmethod
    def conv_shapes(cls, obs_shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """(C, H, W) of a member's activations after each convolution, for its input ``obs_shape`` (C, H, W)."""
        shapes, side = [], obs_shape[1]
        for stride in cls.STRIDES:
            side = (side - 3) // stride + 1
            shapes.append((cls.CHANNELS, side, side))
        return shapes

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in self.convnet:
            if isinstance(layer, PackedConv2d):
                layer.reset_parameters(generators)

    def forward(self, grouped: torch.Tensor) -> torch.Tensor:
        """``grouped``: (N, K*C, H, W) uint8 from ``group_pixels`` or the augmentation; returns (K, N, repr_dim)."""
        # One conversion then in-place scaling: 3x faster than uint8 / 255 - 0.5 on CPU.
        first_conv = cast(PackedConv2d, self.convnet[0])  # the first layer is a conv (__init__)
        x = grouped.to(first_conv.weight.dtype).mul_(1.0 / 255.0).sub_(0.5)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.convnet(x)
        n, _, h, w = x.shape
        # Flattened in (H, W, C) order per member, whatever the memory format: for channels_last
        # activations that is a free view for K = 1, where DrQ-v2's (C, H, W) order costs a copy
        # forward and a layout-mismatched (3x slower) ReLU backward. It is a fixed permutation
        # of the trunk's inputs, so the model class is unchanged.
        features = x.permute(0, 2, 3, 1).reshape(n, h, w, self.k, self.CHANNELS)
        return features.permute(3, 0, 1, 2, 4).reshape(self.k, n, -1)


def chw_to_hwc_columns(weight: torch.Tensor, chw: tuple[int, int, int]) -> torch.Tensor:
    """A trunk weight (or its optimizer moment) whose inputs were flattened in (C, H, W) order,
    rearranged for inputs flattened in (H, W, C) order: the same function of the conv output."""
    return weight.reshape(weight.shape[0], *chw).permute(0, 2, 3, 1).reshape(weight.shape[0], -1).contiguous()


class Actor(nn.Module):
    def __init__(
        self,
        k: int,
        repr_dim: int,
        action_dim: int,
        feature_dim: int,
        hidden_dim: int,
        norm: str,
        bn_momentum: float,
        bn_eps: float,
    ):
        super().__init__()
        self.trunk = trunk(k, repr_dim, feature_dim)
        self.policy = mlp(k, feature_dim, hidden_dim, action_dim, norm, bn_momentum, bn_eps)

    def forward(self, obs: torch.Tensor, std: float) -> "TruncatedNormal":
        """obs (K, N, repr) -> a distribution over (K, N, action_dim)."""
        mean = torch.tanh(from_mlp_layout(self.policy(to_mlp_layout(self.trunk(obs)))))
        return TruncatedNormal(mean, std)


class Critic(nn.Module):
    def __init__(
        self,
        k: int,
        repr_dim: int,
        action_dim: int,
        feature_dim: int,
        hidden_dim: int,
        norm: str,
        bn_momentum: float,
        bn_eps: float,
    ):
        super().__init__()
        self.trunk = trunk(k, repr_dim, feature_dim)
        self.q1 = mlp(k, feature_dim + action_dim, hidden_dim, 1, norm, bn_momentum, bn_eps)
        self.q2 = mlp(k, feature_dim + action_dim, hidden_dim, 1, norm, bn_momentum, bn_eps)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (K, N, repr), action (K, N, A) -> Q1, Q2 (K, N, 1)."""
        features_action = to_mlp_layout(torch.cat([self.trunk(obs), action], dim=-1))
        return from_mlp_layout(self.q1(features_action)), from_mlp_layout(self.q2(features_action))


@dataclass(frozen=True)
class Networks:
    """The networks of one pack (method.md §1): the encoder (the identity for states), the actor, the critic and
    the critic target, which follows the critic instead of being trained."""

    encoder: nn.Module
    actor: Actor
    critic: Critic
    critic_target: Critic

    def every(self) -> tuple[nn.Module, ...]:
        return (self.encoder, self.actor, self.critic, self.critic_target)

    def trained(self) -> tuple[nn.Module, ...]:
        return (self.encoder, self.actor, self.critic)


def build_networks(config: TrialConfig, k: int, obs_shape: tuple[int, ...], action_dim: int) -> Networks:
    """The networks of a pack of ``k`` members shaped by ``config``, their weights not yet initialized (the
    agent draws them from each member's generator). ``obs_shape``: a member's observation (C, H, W) or (state_dim,)."""
    if config.obs_type == "pixels":
        encoder: nn.Module = Encoder(
            k,
            obs_shape,
            channels_last=config.channels_last,
            norm=config.encoder_norm,
            bn_momentum=config.bn_momentum,
            bn_eps=config.bn_eps,
        )
        repr_dim = cast(Encoder, encoder).repr_dim
    else:
        encoder, repr_dim = nn.Identity(), math.prod(obs_shape)
    sizes = (config.feature_dim, config.hidden_dim)
    bn_args = (config.bn_momentum, config.bn_eps)
    return Networks(
        encoder,
        Actor(k, repr_dim, action_dim, *sizes, config.actor_norm, *bn_args),
        Critic(k, repr_dim, action_dim, *sizes, config.critic_norm, *bn_args),
        Critic(k, repr_dim, action_dim, *sizes, config.critic_norm, *bn_args),
    )


class ParameterCount(NamedTuple):
    """How many numbers one trial's networks hold."""

    saved: int  # what its checkpoint saves: every parameter and buffer (BN statistics and step counters)
    trained: int  # the parameters its optimizers train (the encoder's, the actor's and the critic's)


def parameter_count(config: TrialConfig, obs_shape: tuple[int, ...], action_dim: int) -> ParameterCount:
    """The numbers of one trial's networks, counted on networks built on the meta device (shapes without memory
    or compute), so the count is the architecture's whatever it becomes."""
    with torch.device("meta"):
        networks = build_networks(config, 1, obs_shape, action_dim)
    return ParameterCount(
        saved=sum(value.numel() for net in networks.every() for value in net.state_dict().values()),
        trained=sum(p.numel() for net in networks.trained() for p in net.parameters()),
    )


class TruncatedNormal:
    """Gaussian whose samples are clipped to (-1, 1) with a straight-through gradient (DrQ-v2).

    ``mean`` is (K, N, A); each member's noise comes from that member's generator,
    so a member draws the same numbers whatever pack it runs in.
    """

    def __init__(self, mean: torch.Tensor, std: float, edge: float = 1e-6):
        self.mean, self.std, self.edge = mean, std, edge

    def sample(self, generators: Sequence[torch.Generator], clip: float | None = None) -> torch.Tensor:
        noise = member_randn(self.mean.shape, generators, self.mean.device, self.mean.dtype).mul_(self.std)
        if clip is not None:
            noise = noise.clamp_(-clip, clip)
        x = self.mean + noise
        clamped = x.clamp(-1.0 + self.edge, 1.0 - self.edge)
        return x - x.detach() + clamped.detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        var = self.std**2
        return -((value - self.mean) ** 2) / (2 * var) - math.log(self.std) - math.log(math.sqrt(2 * math.pi))


def member_randn(
    shape: torch.Size | tuple[int, ...],
    generators: Sequence[torch.Generator],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` (K, ...), member k's slice drawn from generator k."""
    out = torch.empty(shape, device=device, dtype=dtype)
    for k, generator in enumerate(generators):
        out[k].normal_(generator=generator)
    return out


class RandomShift(nn.Module):
    """DrQ's random shift: replicate-pad by ``pad``, crop back at a random integer offset.

    DrQ-v2 writes this as a bilinear ``grid_sample`` whose sample points fall
    exactly on pixel centres (integer shifts, align_corners=False), i.e. an
    integer crop; doing the crop directly on uint8 pixels gives the same images
    (checked against the grid_sample form in the tests) for a fraction of the
    memory traffic. Input (K, N, C, H, W); output (N, K*C, H, W) channels_last,
    laid out for the encoder's grouped convolution; member k's offsets come
    from generator k.
    """

    def __init__(self, pad: int = 4):
        super().__init__()
        self.pad = pad

    def shifts(self, k: int, n: int, generators: Sequence[torch.Generator], device: torch.device) -> torch.Tensor:
        """(K, N, 2) integer offsets in [0, 2*pad]: (column, row) per image, as DrQ-v2 draws them."""
        return torch.stack(
            [torch.randint(0, 2 * self.pad + 1, size=(n, 2), generator=g, device=device) for g in generators[:k]]
        )

    def forward(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        k, n, c, h, w = x.shape
        pad = self.pad
        shift = self.shifts(k, n, generators, x.device)
        # Replicate padding + crop in one gather: out-of-range rows/cols clamp to the border.
        rows = (shift[..., 1:2] - pad + torch.arange(h, device=x.device)).clamp_(0, h - 1)  # (K, N, H)
        cols = (shift[..., 0:1] - pad + torch.arange(w, device=x.device)).clamp_(0, w - 1)  # (K, N, W)
        members = torch.arange(k, device=x.device).view(1, 1, 1, k)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        # Indexing the (K, N, H, W, C) view yields (N, H, W, K, C): channels_last (N, K*C, H, W) once permuted.
        out = x.permute(0, 1, 3, 4, 2)[
            members, batch, rows.permute(1, 2, 0).unsqueeze(2), cols.permute(1, 2, 0).unsqueeze(1)
        ]
        return out.reshape(n, h, w, k * c).permute(0, 3, 1, 2)
