"""Sweep orchestrator: YAML grids -> validated trials -> Ray Tune -> result store (+ W&B views).

Entry point: ``python -m orchestrator.sweep --grid NAME_OR_PATH --profile local|paper``
(``make sweep``).  The grid format is documented in ``sweeps/README.md``; running,
resuming and clusters in ``docs/orchestrator.md``.
"""

from __future__ import annotations

from pathlib import Path

from contract.grid_shows import SWEEPS_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent
__all__ = ["REPO_ROOT", "SWEEPS_DIR"]
