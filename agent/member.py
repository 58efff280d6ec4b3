"""A member of a pack as the trainer holds it: its trial's config, directory, sinks and world, and its windows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.member_process import WorkerWorld
from agent.member_world import LocalWorld
from agent.sinks import MetricSink
from agent.trial_end import Ending
from contract.config import TrialConfig


@dataclass
class Member:
    """One trial of a pack: everything that is not the shared networks (issue #9, item 2). Its environments,
    replay and coverage are its ``world``: in this process (``LocalWorld``) or a worker's (``WorkerWorld``)."""

    config: TrialConfig
    out_dir: Path
    sinks: Sequence[MetricSink]
    world: LocalWorld | WorkerWorld
    next_checkpoint_frame: float
    pending: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # since the last log row
    ended_as: Ending | None = None  # set when the member ends early: state, error, frame (and traceback)
    # (mean, std) of each Q-bias measurement since the last evaluation row (q_bias_every_frames > 0)
    q_bias_pending: list[tuple[float, float]] = field(default_factory=list)
