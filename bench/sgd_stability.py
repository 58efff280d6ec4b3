"""Which SGD learning rates (momentum 0.9) a DrQ-v2 learner survives, per width and normalization (issue #18).

    python -m bench.sgd_stability [--updates 100] [--hidden 256 1024] [--lrs 1e-3 3e-3 1e-2 3e-2] [--methods ...]

Updates on one fixed random cartpole_swingup state batch (batch 256, the update every grid runs), SGD with
momentum 0.9 for every network; a setting is *unstable* when any loss or Q value becomes non-finite or |Q|
exceeds 1e4 (the returns of a DMC task are at most 1000, the discounted values ~100). Prints one line per
setting and the largest stable lr per (width, method); docs/performance.md records a run with its CPU. The
optimizer grid's SGD axes come from it (sweeps/optimizer.yaml).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from agent.drqv2 import DrQV2Agent
from bench.common import machine, random_batch
from contract.config import build_config

METHODS = {
    "Origin": {"actor_norm": "none", "critic_norm": "none"},
    "MA-BN": {"actor_norm": "batch_norm", "critic_norm": "batch_norm", "bn_mode": "TTETT"},
}
Q_LIMIT = 1e4


def survives(hidden: int, method: str, lr: float, updates: int) -> tuple[bool, int, float]:
    """(stable, updates run, largest |Q mean| seen)."""
    torch.manual_seed(0)
    config = build_config(
        {
            "task": "cartpole_swingup",
            "obs_type": "states",
            "hidden_dim": hidden,
            "optimizer": "sgd",
            "lr": lr,
            "sgd_momentum": 0.9,
            "torch_threads": 1,
            **METHODS[method],
        }
    )
    agent = DrQV2Agent(config, (5,), 1, torch.device("cpu"))
    batch = random_batch((5,), 1, config.batch_size, pixels=False, members=1)
    largest = 0.0
    for k in range(updates):
        values = agent.update(batch, 10_000 + k).read()
        q = float(np.abs(values["q/mean"]).max())
        largest = max(largest, q)
        if not all(np.isfinite(v).all() for v in values.values()) or q > Q_LIMIT:
            return False, k + 1, largest
    return True, updates, largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sgd_stability", description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = machine()
    print(f"# {info.get('cpu', '')} torch {torch.__version__}; {args.updates} updates, SGD momentum 0.9")
    for hidden in args.hidden:
        for method in args.methods:
            stable_lrs = []
            for lr in sorted(args.lrs):
                start = time.perf_counter()
                stable, ran, largest = survives(hidden, method, lr, args.updates)
                verdict = "stable" if stable else f"unstable after {ran} updates"
                print(
                    f"hidden {hidden:5d} {method:6s} lr {lr:g}: {verdict} (max |Q| {largest:.3g}; "
                    f"{time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
                if stable:
                    stable_lrs.append(lr)
            best = max(stable_lrs) if stable_lrs else math.nan
            print(f"hidden {hidden:5d} {method:6s} largest stable lr: {best:g}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
