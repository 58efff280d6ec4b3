"""Where metrics go. The worker calls ``log(frame, metrics)``; sinks decide the rest.

The disk sink is the source of truth; the orchestrator adds Ray Tune and W&B
sinks with the same interface.  A sink must never lose what was already written.
The store's layout, ids and statuses are contract/store.py's.
"""

from __future__ import annotations

import csv
import errno
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from agent.metrics import COLUMNS
from contract.store import CONFIG_FILE, METRICS_FILE, StoreWriteError, TrialStatus, atomic_write_text, read_metric_rows


class MetricSink(Protocol):
    def log(self, frame: int, metrics: Mapping[str, float]) -> None: ...

    def checkpoint(self, frame: int, path: Path) -> None: ...

    def close(self, status: TrialStatus) -> None: ...


def sync_before_checkpoint(sinks: Sequence[MetricSink]) -> None:
    """Make every row logged so far durable before a checkpoint is written (issue #19): checkpoints are fsynced,
    so after a power loss a checkpoint newer than the metrics on disk would resume past rows that are gone."""
    for sink in sinks:
        sync = getattr(sink, "sync", None)  # only sinks that own files (DiskSink); a view has nothing to sync
        if sync is not None:
            sync()


def write_config(out_dir: Path, config: Mapping[str, Any]) -> None:
    try:
        atomic_write_text(out_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))
    except OSError as err:
        raise StoreWriteError(err, out_dir / CONFIG_FILE, "the trial config") from err


class DiskSink:
    """Appends one CSV row per log point to ``metrics.csv`` (fixed columns: frame + method.md §7 names).

    On resume, rows after the checkpoint's frame are dropped: they will be logged again.
    """

    def __init__(self, out_dir: Path, resume_frame: int | None = None):
        self.path = Path(out_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_frame is not None and self.path.exists():
            self._truncate_after(resume_frame)
        elif self.path.exists():
            self.path.unlink()  # a fresh start (frame 0): the old rows would be logged again
        fresh = not self.path.exists()
        try:
            self._handle = self.path.open("a", newline="")
            self._writer = csv.DictWriter(self._handle, fieldnames=COLUMNS, extrasaction="raise")
            if fresh:
                self._writer.writeheader()
                self._handle.flush()
        except OSError as err:
            raise StoreWriteError(err, self.path, "the metrics header") from err

    def _truncate_after(self, frame: int) -> None:
        rows = [row for row in read_metric_rows(self.path) if int(float(row["frame"])) <= frame]
        text_rows = [",".join(COLUMNS)] + [",".join(row.get(c, "") or "" for c in COLUMNS) for row in rows]
        try:
            atomic_write_text(self.path, "\n".join(text_rows) + "\n")
        except OSError as err:
            raise StoreWriteError(err, self.path, "the metrics truncated to the checkpoint") from err

    def _check_in_place(self, what: str) -> None:
        """The open metrics.csv is still the trial directory's: a directory renamed or deleted while the trial
        runs would otherwise take every later row with it, and the trial would end "completed" with no data in
        its place (issue #19)."""
        try:
            same = os.path.samestat(os.fstat(self._handle.fileno()), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            gone = OSError(errno.ENOENT, "the trial directory was moved or deleted while the trial ran", str(self.path))
            raise StoreWriteError(gone, self.path, what)

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        self._check_in_place(f"the metrics row of frame {int(frame)}")
        row: dict[str, int | str] = {"frame": int(frame)}
        for key, value in metrics.items():
            row[key] = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))
        try:
            self._writer.writerow(row)
            self._handle.flush()
        except OSError as err:
            raise StoreWriteError(err, self.path, f"the metrics row of frame {int(frame)}") from err

    def sync(self) -> None:
        """metrics.csv on stable storage (flushed at every row, fsynced here: before each checkpoint)."""
        self._check_in_place("the metrics synced before a checkpoint")
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as err:
            raise StoreWriteError(err, self.path, "the metrics synced before a checkpoint") from err

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: TrialStatus) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # a row that could not be flushed was reported when it was logged
