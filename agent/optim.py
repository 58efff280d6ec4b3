"""One optimizer step over the stacked parameters of a pack, with per-member learning rates (issue #9).

The update rule is PyTorch's own fused Adam/SGD kernel (``torch.optim.adam.adam``,
``torch.optim.sgd.sgd``), called once per group of members that share their
hyper-parameters on each member's slice of the stacked tensors, so a member of a
pack steps exactly as a trial with its own ``torch.optim.Adam``/``SGD`` would.
When every member shares them (the usual pack: members differ in seed or mode),
the kernel steps each stacked tensor whole: one list of P tensors instead of
P x K slices, the same elementwise arithmetic (issue #17: the slices were half the
~15,000 host-side tensor operations of a K = 16 update). A member's optimizer state is exported
and imported in ``torch.optim.Optimizer.state_dict`` format, which is what a
trial's checkpoint held before packing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

ADAM_DEFAULTS = {
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": True,
    "decoupled_weight_decay": False,
}
SGD_DEFAULTS = {
    "dampening": 0,
    "weight_decay": 0,
    "nesterov": False,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": True,
}


def _transposed_storage(tensor: torch.Tensor) -> bool:
    """A weight stored transposed (agent.networks.PackedLinear: a (.., out, in) view of (.., in, out) memory)."""
    return tensor.dim() >= 2 and not tensor.is_contiguous() and tensor.transpose(-1, -2).is_contiguous()


class PackedOptimizer:
    """Adam or SGD over parameters stacked on dim 0 (one slice per member)."""

    def __init__(
        self,
        kind: str,
        params: Sequence[torch.nn.Parameter],
        lrs: Sequence[float],
        momenta: Sequence[float] | None = None,
    ):
        self.kind = kind
        self.params = list(params)
        self.lrs = [float(lr) for lr in lrs]
        self.momenta = [float(m) for m in (momenta or [0.0] * len(self.lrs))]
        k = len(self.lrs)
        groups: dict[tuple[float, float], list[int]] = defaultdict(list)
        for member, key in enumerate(zip(self.lrs, self.momenta)):
            groups[key].append(member)
        self.groups = dict(groups)
        # One group: each stacked tensor is stepped whole. The members of a pack update together from one step
        # on (agent.train groups them by step), so they share one Adam step counter per parameter too.
        self.whole = len(self.groups) == 1
        if kind == "adam":
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
            # One step counter per member and parameter, as torch keeps one per parameter.
            self.steps = [
                [torch.zeros((), dtype=torch.float32, device=p.device)] * k
                if self.whole
                else [torch.zeros((), dtype=torch.float32, device=p.device) for _ in range(k)]
                for p in self.params
            ]
        elif kind == "sgd":
            # Zero buffers: with dampening 0 the first step gives buf = grad, as torch's lazy buffer does.
            # None without momentum (every member's momentum 0): torch keeps no buffer then.
            self.momentum_buffer = [torch.zeros_like(p) for p in self.params] if any(self.momenta) else None
        else:
            raise ValueError(f"optimizer {kind!r}: allowed adam, sgd")

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = {i: p.grad for i, p in enumerate(self.params) if p.grad is not None}
        if not grads:
            return
        for (lr, momentum), members in self.groups.items():
            # Every member shares these hyper-parameters: each stacked tensor whole (k None); else each member's
            # slice of it.
            pieces: list[tuple[int, int | None]] = (
                [(i, None) for i in grads] if self.whole else [(i, k) for k in members for i in grads]
            )
            self._step_pieces(lr, momentum, pieces, grads)

    def _step_pieces(
        self, lr: float, momentum: float, pieces: list[tuple[int, int | None]], grads: dict[int, torch.Tensor]
    ) -> None:
        # A weight stored transposed is stepped through its transpose, and its gradient and state the same way
        # (their layouts are the parameter's): the same elementwise update, written in place (the kernel would
        # otherwise copy it in and out at every step).
        flipped = [_transposed_storage(self._piece(self.params[i].detach(), k)) for i, k in pieces]

        def stepped(tensors: Sequence[torch.Tensor] | dict[int, torch.Tensor]) -> list[torch.Tensor]:
            views = [self._piece(tensors[i], k) for i, k in pieces]
            return [view.transpose(-1, -2) if flip else view for view, flip in zip(views, flipped)]

        p_list, g_list = stepped([p.detach() for p in self.params]), stepped(grads)
        if self.kind == "adam":
            steps = [self.steps[i][k or 0] for i, k in pieces]
            self._step(lr, momentum, p_list, g_list, stepped(self.exp_avg), stepped(self.exp_avg_sq), steps)
        else:
            buffers: list[Any] = (
                stepped(self.momentum_buffer) if self.momentum_buffer is not None and momentum else [None] * len(pieces)
            )
            self._step(lr, momentum, p_list, g_list, buffers, [], [])

    @staticmethod
    def _piece(tensor: torch.Tensor, k: int | None) -> torch.Tensor:
        return tensor if k is None else tensor[k]

    def _step(
        self,
        lr: float,
        momentum: float,
        p_list: list[torch.Tensor],
        g_list: list[torch.Tensor],
        first: list[Any],
        second: list[torch.Tensor],
        steps: list[torch.Tensor],
    ) -> None:
        """One fused kernel call. Adam: ``first``/``second`` its moments; SGD: ``first`` the momentum buffers."""
        if self.kind == "adam":
            adam(
                p_list,
                g_list,
                first,
                second,
                [],
                steps,
                fused=True,
                amsgrad=False,
                beta1=0.9,
                beta2=0.999,
                lr=lr,
                weight_decay=0.0,
                eps=1e-8,
                maximize=False,
            )
        else:
            sgd(
                p_list,
                g_list,
                first,
                fused=True,
                weight_decay=0.0,
                momentum=momentum,
                lr=lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
            )

    # ------------------------------------------------------------ one member's state
    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member k's state as ``torch.optim.Adam/SGD.state_dict()`` of a single network would give it."""
        state: dict[int, dict[str, torch.Tensor]] = {}
        for i in range(len(self.params)):
            if self.kind == "adam":
                if float(self.steps[i][k]) > 0:
                    state[i] = {
                        "step": self.steps[i][k].detach().cpu().clone(),
                        "exp_avg": self.exp_avg[i][k].detach().cpu().clone(),
                        "exp_avg_sq": self.exp_avg_sq[i][k].detach().cpu().clone(),
                    }
            elif self.momentum_buffer is not None:
                state[i] = {"momentum_buffer": self.momentum_buffer[i][k].detach().cpu().clone()}
        defaults = ADAM_DEFAULTS if self.kind == "adam" else {**SGD_DEFAULTS, "momentum": self.momenta[k]}
        group = {"lr": self.lrs[k], **defaults, "params": list(range(len(self.params)))}
        return {"state": state, "param_groups": [group]}

    @torch.no_grad()
    def load_member_state_dict(self, k: int, state: dict[str, Any]) -> None:
        saved = state.get("state", {})
        for i in range(len(self.params)):
            entry = saved.get(i, saved.get(str(i)))
            if self.kind == "adam":
                if entry is None:
                    self.steps[i][k].zero_()
                    self.exp_avg[i][k].zero_()
                    self.exp_avg_sq[i][k].zero_()
                    continue
                self.steps[i][k].copy_(torch.as_tensor(entry["step"], dtype=torch.float32))
                self.exp_avg[i][k].copy_(entry["exp_avg"])
                self.exp_avg_sq[i][k].copy_(entry["exp_avg_sq"])
            elif self.momentum_buffer is not None:
                buffer = None if entry is None else entry.get("momentum_buffer")
                if buffer is None:
                    self.momentum_buffer[i][k].zero_()
                else:
                    self.momentum_buffer[i][k].copy_(buffer)
