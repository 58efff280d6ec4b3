"""Where metrics go. The worker calls ``log(frame, metrics)``; sinks decide the rest.

The disk sink is the source of truth; the orchestrator adds Ray Tune and W&B
sinks with the same interface.  A sink must never lose what was already written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from agent.metrics import COLUMNS

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = "checkpoint"
TRIAL_FILE = "trial.json"  # written by the orchestrator: where and as what the trial ran
STATUSES = ("running", "completed", "diverged", "failed")
FINISHED_STATUSES = ("completed", "diverged")  # a diverged trial is a result (SPEC §7), not a failure


class MetricSink(Protocol):
    def log(self, frame: int, metrics: Mapping[str, float]) -> None: ...

    def checkpoint(self, frame: int, path: Path) -> None: ...

    def close(self, status: Mapping[str, Any]) -> None: ...


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_config(out_dir: Path, config: Mapping[str, Any]) -> None:
    atomic_write_text(out_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))


def write_status(out_dir: Path, status: Mapping[str, Any]) -> None:
    atomic_write_text(out_dir / STATUS_FILE, json.dumps(dict(status), indent=2) + "\n")


def read_status(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class DiskSink:
    """Appends one CSV row per log point to ``metrics.csv`` (fixed columns: frame + SPEC §7 names).

    On resume, rows after the checkpoint's frame are dropped: they will be logged again.
    """

    def __init__(self, out_dir: Path, resume_frame: int | None = None):
        self.path = Path(out_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_frame is not None and self.path.exists():
            self._truncate_after(resume_frame)
        elif self.path.exists():
            self.path.unlink()
        fresh = not self.path.exists()
        self._handle = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS, extrasaction="raise")
        if fresh:
            self._writer.writeheader()
            self._handle.flush()

    def _truncate_after(self, frame: int) -> None:
        with self.path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(float(row["frame"])) <= frame]
        text_rows = [",".join(COLUMNS)] + [",".join(row.get(c, "") or "" for c in COLUMNS) for row in rows]
        atomic_write_text(self.path, "\n".join(text_rows) + "\n")

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        row = {"frame": int(frame)}
        for key, value in metrics.items():
            row[key] = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))
        self._writer.writerow(row)
        self._handle.flush()

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: Mapping[str, Any]) -> None:
        self._handle.close()
