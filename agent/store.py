"""The result store on disk, defined once (issue #12): layout, file names, trial and cell ids, the trial status
machine, atomic writes, and the readers of what the worker writes.  The worker (agent), the orchestrator and
analysis all use this module; it imports neither torch nor the orchestrator, so analysis reads a store with it
on a machine that has neither.

Layout: ``<results>/<grid>/<trial_id>/`` holds ``config.yaml`` (the resolved config), ``metrics.csv``,
``status.json``, ``trial.json`` (where and as what the trial ran, by the orchestrator) and the checkpoints
(``agent/checkpoint.py`` owns their format); beside the trial directories, ``_ray/`` (Ray Tune's experiment
state), ``_sweep/`` (what each profile last asked for) and the sweep lock.

A trial's id is a hash of its resolved config without the placement-only keys (where and how it runs, not what
it computes) and without keys added later at their neutral values, so a stored trial keeps its id when a key is
added; the cell id is the same hash without ``seed``: all seeds of one experimental condition share it.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.bn_modes import DEFAULT_BN_MODE, step_is_train

# ------------------------------------------------------------------ layout
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
    "new",
    "running",
    "completed",
    "diverged",
    "failed",
    "interrupted",
)
STATUSES = (NEW, RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED)
TRANSITIONS = {
    NEW: (RUNNING,),
    RUNNING: (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED),
    FAILED: (RUNNING,),
    INTERRUPTED: (RUNNING,),
    COMPLETED: (),
    DIVERGED: (),
}
FINISHED_STATUSES = (COMPLETED, DIVERGED)  # a diverged trial is a result (SPEC §7), not a failure
UNFINISHED_STATUSES = (NEW, RUNNING, FAILED, INTERRUPTED)  # a rerun runs these (from their checkpoints)


# errnos that mean "this filesystem will not take the write", not "this trial is broken"
STORE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})


class StoreWriteError(OSError):
    """The result store refused a write (a full disk, a read-only directory): ``filename`` says where,
    ``what`` what was being written.  Not the trial's fault: its status becomes ``interrupted``."""

    def __init__(self, err: OSError, path: Path | str, what: str):
        super().__init__(err.errno, err.strerror or str(err), str(getattr(err, "filename", None) or path))
        self.what = what

    def __str__(self) -> str:
        return f"could not write {self.filename} ({self.what}): {self.strerror}"


RAY_DIR = "_ray"  # Ray Tune's experiment state, beside the trial directories
SWEEP_DIR = "_sweep"  # what each profile of the grid last asked for (trial list, grid text)
LOCK_FILE = ".sweep.lock"
CHECKPOINT_META = ".metadata.json"  # the frame of a checkpoint (ray.tune.Checkpoint.set_metadata writes it)


def grid_dir(results: Path, grid: str) -> Path:
    return Path(results) / grid


def trial_dir(results: Path, grid: str, tid: str) -> Path:
    return grid_dir(results, grid) / tid


# ------------------------------------------------------------------ ids
PLACEMENT_KEYS = ("device", "torch_threads", "frame_codec", "env_threads")
# Keys added after results were first stored: at these values they are left out of trial and
# cell identities, so every trial stored before the key existed keeps its id. Each value is the one
# that computes and measures what a trial did before the key existed.
ID_NEUTRAL_DEFAULTS: dict[str, Any] = {
    "precision": "fp32",
    "task_presets": "drqv2",
    "encoder_norm": "none",
    "encoder_bn_passes": "train",
    "q_bias_every_frames": 0,
    "q_bias_episodes": 20,
    "q_bias_augment": False,
}


def _q_bias_bn_stats_is_neutral(config: Mapping[str, Any]) -> bool:
    """q_bias_bn_stats changes a measurement only where a critic BN layer runs Critic-I in train mode: there only
    ``eval_batch`` measures what trials stored before the key measured; ``update`` measures something new."""
    if config.get("q_bias_bn_stats") == "eval_batch" or config.get("critic_norm") != "batch_norm":
        return True
    return not step_is_train(config.get("bn_mode") or DEFAULT_BN_MODE, "critic_i")


# Keys added later whose neutrality depends on the rest of the config (ID_NEUTRAL_DEFAULTS: a fixed value).
ID_NEUTRAL_WHEN: dict[str, Callable[[Mapping[str, Any]], bool]] = {"q_bias_bn_stats": _q_bias_bn_stats_is_neutral}


def identity_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that make a trial what it is: placement keys and id-neutral values left out."""
    return {
        k: v
        for k, v in config.items()
        if k not in PLACEMENT_KEYS
        and not (k in ID_NEUTRAL_DEFAULTS and v == ID_NEUTRAL_DEFAULTS[k])
        and not (k in ID_NEUTRAL_WHEN and ID_NEUTRAL_WHEN[k](config))
    }


ID_LENGTH = 12


def config_digest(config: Mapping[str, Any]) -> str:
    """Short content hash of a mapping: key order and YAML/JSON round trips do not change it."""
    canonical = json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def trial_id(config: Mapping[str, Any]) -> str:
    """Content hash of a resolved trial config (``TrialConfig.to_dict()``), placement keys excluded (and keys
    added later, at their neutral defaults: a trial stored before a key existed keeps its id)."""
    return config_digest(identity_config(config))


def cell_id(config: Mapping[str, Any]) -> str:
    """The trial hash without the seed: one id per experimental condition (task included)."""
    return config_digest({k: v for k, v in identity_config(config).items() if k != "seed"})


# ------------------------------------------------------------------ reading and writing
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


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding an object, or None when it is missing, unreadable, torn or something else: every
    JSON file of the store (status, trial.json, manifests) is read so, and a bad one never stops a reader."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_status(out_dir: Path) -> dict[str, Any] | None:
    return read_json_object(Path(out_dir) / STATUS_FILE)  # None: the trial runs again from its checkpoint


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


def write_trial_meta(out_dir: Path, meta: Mapping[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / TRIAL_FILE, json.dumps(dict(meta), indent=2, sort_keys=False) + "\n")


def read_trial_meta(out_dir: Path) -> dict[str, Any] | None:
    """trial.json, or None when missing or unreadable (it only describes the trial: nothing depends on it)."""
    return read_json_object(Path(out_dir) / TRIAL_FILE)


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


def checkpoint_frame(out_dir: Path) -> int | None:
    """Frame of the trial's newest complete checkpoint (its manifest; for checkpoints written before issue
    #11, the marker the orchestrator writes beside it), if any."""
    from agent.checkpoint import frame_of  # the checkpoint format's module (it imports torch: only when asked)

    frame = frame_of(Path(out_dir))
    if frame is not None:
        return frame
    try:
        return int(json.loads((Path(out_dir) / CHECKPOINT_DIR / CHECKPOINT_META).read_text())["frame"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_frame(out_dir: Path) -> int:
    """Frames a trial already has: all of them when finished, else where its checkpoint resumes."""
    status = read_status(Path(out_dir)) or {}
    if status.get("status") in FINISHED_STATUSES:
        return int(status.get("frame") or 0)
    return checkpoint_frame(out_dir) or 0


def is_done(out_dir: Path) -> bool:
    return trial_state(out_dir) in FINISHED_STATUSES
