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

# The trial status machine (issue #11), defined here once; the worker, the orchestrator's planner and
# summary, and analysis all read it through these names:
#   new (no status.json yet) -> running -> completed | diverged | failed | interrupted
#   failed | interrupted -> running (a rerun resumes from the latest intact checkpoint)
# ``interrupted``: stopped from outside (Ctrl-C, Ray ending the trial, a killed driver, a store that
# could not be written) with nothing wrong in the trial itself; ``failed``: the trial itself raised.
NEW, RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED = (
    "new", "running", "completed", "diverged", "failed", "interrupted")
STATUSES = (NEW, RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED)
TRANSITIONS = {NEW: (RUNNING,), RUNNING: (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED),
               FAILED: (RUNNING,), INTERRUPTED: (RUNNING,), COMPLETED: (), DIVERGED: ()}
FINISHED_STATUSES = (COMPLETED, DIVERGED)  # a diverged trial is a result (SPEC §7), not a failure
UNFINISHED_STATUSES = (NEW, RUNNING, FAILED, INTERRUPTED)  # a rerun runs these (from their checkpoints)


class StoreWriteError(OSError):
    """The result store refused a write (a full disk, a read-only directory): ``filename`` says where,
    ``what`` what was being written.  Not the trial's fault: its status becomes ``interrupted``."""

    def __init__(self, err: OSError, path: Path | str, what: str):
        super().__init__(err.errno, err.strerror or str(err), str(getattr(err, "filename", None) or path))
        self.what = what

    def __str__(self) -> str:
        return f"could not write {self.filename} ({self.what}): {self.strerror}"


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
    try:
        atomic_write_text(out_dir / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))
    except OSError as err:
        raise StoreWriteError(err, out_dir / CONFIG_FILE, "the trial config") from err


def write_status(out_dir: Path, status: Mapping[str, Any]) -> None:
    """Atomically, or, when the disk is too full for a new file, in place over the old one if the new
    text fits in it (a status must be able to say ``interrupted`` on a full disk)."""
    if status.get("status") not in STATUSES[1:]:
        raise ValueError(f"status {status.get('status')!r}: expected one of {', '.join(STATUSES[1:])}")
    path = Path(out_dir) / STATUS_FILE
    text = json.dumps(dict(status), indent=2) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as err:
        if not _overwrite_in_place(path, text):
            raise StoreWriteError(err, path, "the trial status") from err


def _overwrite_in_place(path: Path, text: str) -> bool:
    """Rewrite an existing small file without allocating a new one (its block is already the file's)."""
    data = text.encode()
    try:
        if not path.exists() or len(data) > max(path.stat().st_size, 4096):
            return False
        with path.open("r+b") as handle:
            handle.write(data)
            handle.truncate()
        return True
    except OSError:
        return False


def read_status(out_dir: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((Path(out_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None  # missing, unreadable or torn: the trial is run again from its checkpoint
    return status if isinstance(status, dict) else None


def state_of(status: Mapping[str, Any] | None, has_metrics: bool = False) -> str:
    """A status.json's place in the status machine.  Without a readable one: ``running`` when metrics exist
    (the worker writes its status first, so it was lost; the trial is unfinished either way), else ``new``.
    A rerun runs every unfinished trial from its latest intact checkpoint."""
    if status is None:
        return RUNNING if has_metrics else NEW
    value = str(status.get("status", NEW))
    return value if value in STATUSES else NEW


def trial_state(out_dir: Path) -> str:
    out_dir = Path(out_dir)
    return state_of(read_status(out_dir), (out_dir / METRICS_FILE).exists())


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

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        row = {"frame": int(frame)}
        for key, value in metrics.items():
            row[key] = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))
        try:
            self._writer.writerow(row)
            self._handle.flush()
        except OSError as err:
            raise StoreWriteError(err, self.path, f"the metrics row of frame {int(frame)}") from err

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: Mapping[str, Any]) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # a row that could not be flushed was reported when it was logged


def read_metric_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a metrics.csv: a last line cut short (a crash or a full disk in mid-write)
    and rows with the wrong number of fields are left out."""
    text = Path(path).read_text()
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # no newline after it: the write never finished
    reader = csv.reader(line for line in lines if line)
    try:
        header = next(reader)
    except StopIteration:
        return []
    return [dict(zip(header, fields)) for fields in reader if len(fields) == len(header)]
