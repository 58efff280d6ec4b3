"""What one sweep command asks for, as a typed value: the command line (``orchestrator.sweep``) builds it once;
the planner and the runners read it and never see ``argparse``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepOptions:
    grid: str  # a grid name from sweeps/ or a path to a YAML file
    profile: str
    results: Path  # the result store root, absolute
    figures: Path | None  # where the figures are drawn, absolute; None: not drawn
    dry_run: bool = False
    max_concurrent: int | None = None  # overrides of the grid's own values (None: the grid's)
    max_failures: int | None = None
    pack: int | None = None
    wandb: bool = True
    address: str | None = None  # a Ray cluster; None: a local Ray instance (or none with in_process)
    in_process: bool = False
    progress_every_s: float = 30.0
    host_memory: int | None = None  # dry runs only: plan for a host with this many bytes instead of this machine
