"""The names and manifest of a trial's checkpoints (issue #11): what every reader of a store needs to know about
them without torch.  ``agent/checkpoint.py`` writes and loads them (``torch.save`` and ``torch.load`` of plain
containers); the planner, the orchestrator's trainable and analysis only look at names and manifests.

A trial directory holds up to four checkpoint directories::

    checkpoint/          the latest complete checkpoint
    checkpoint.prev/     the one before it, kept so that a damaged latest one has an intact fallback
    checkpoint.tmp/      one being written; complete (and then usable) only once its manifest exists
    checkpoint.damaged/  one that failed its check, set aside (never read again)

Each holds ``state.pt``, ``replay.pt`` (the replay, when saved) and ``manifest.json`` = ``{"format": 2, "frame",
"step", "files": {"state.pt": {"bytes", "sha256"}, ...}, "owner": {"trial_id", "layout"}}``, written last.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract.files import read_json_object

FORMAT = 2  # 1: the pickled state.pt before issue #11 (no manifest)

STATE_FILE = "state.pt"
REPLAY_FILE = "replay.pt"  # the replay's arrays (absent: not saved, or dropped when the trial finished)
MANIFEST_FILE = "manifest.json"
LATEST, PREVIOUS, PARTIAL, DAMAGED = "checkpoint", "checkpoint.prev", "checkpoint.tmp", "checkpoint.damaged"
CHECKPOINT_DIRS = (LATEST, PREVIOUS, PARTIAL, DAMAGED)
CHECKPOINT_META = ".metadata.json"  # the frame of a checkpoint (ray.tune.Checkpoint.set_metadata writes it)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    return read_json_object(Path(directory) / MANIFEST_FILE)


def candidates(out_dir: Path) -> Iterator[Path]:
    """The checkpoint directories a resume may load, newest first."""
    for name in (LATEST, PARTIAL, PREVIOUS):
        if (Path(out_dir) / name).is_dir():
            yield Path(out_dir) / name


def frame_of(out_dir: Path) -> int | None:
    """The frame of a trial's newest complete checkpoint, from its manifest (not verified: cheap)."""
    frames = [int(m["frame"]) for d in candidates(out_dir) if (m := read_manifest(d)) and "frame" in m]
    return max(frames) if frames else None
