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
import re
import stat
import tempfile
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.bn_modes import DEFAULT_BN_MODE, step_is_train
from agent.yamlio import YamlError, load_yaml

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
FINISHED_STATUSES = (COMPLETED, DIVERGED)  # a diverged trial is a result (method.md §7), not a failure
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


# A grid's name is a directory of the store and a file name under `bnsweep figures --out`: one plain path
# component, visible to analysis (which skips names starting with "." or "_": Ray's and the sweep's own).
PLAIN_NAME_RULE = "a letter or digit, then letters, digits, '.', '_' or '-', at most 100 characters"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def is_plain_name(name: object) -> bool:
    """Whether ``name`` may name a grid (``PLAIN_NAME_RULE``): never a path (``..``, ``/``, absolute), never hidden."""
    return isinstance(name, str) and _PLAIN_NAME.fullmatch(name) is not None


def grid_dir(results: Path, grid: str) -> Path:
    if not is_plain_name(grid):  # the planner and the trainable build every path through here
        raise ValueError(f"grid name {grid!r} is not a plain name ({PLAIN_NAME_RULE})")
    return Path(results) / grid


def trial_dir(results: Path, grid: str, tid: str) -> Path:
    return grid_dir(results, grid) / tid


# ------------------------------------------------------------------ ids
PLACEMENT_KEYS = ("device", "torch_threads", "frame_codec", "env_threads", "member_processes", "keep_replay")
# Placement keys that change what a checkpoint holds (the replay's frame store): a checkpoint written under other
# values is the same trial's but cannot be loaded, so it is not resumable (issue #19).
STATE_LAYOUT_KEYS = ("frame_codec",)
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


def checkpoint_owner(config: Mapping[str, Any]) -> dict[str, Any]:
    """Whose a checkpoint is, written into its manifest: the trial id and the values of STATE_LAYOUT_KEYS."""
    return {"trial_id": trial_id(config), "layout": {key: config.get(key) for key in STATE_LAYOUT_KEYS}}


class ForeignTrialDir(ValueError):
    """A trial directory that holds another trial's results (its config.yaml has another trial id)."""


def check_trial_dir_owner(out_dir: Path, config: Mapping[str, Any]) -> None:
    """Raise ForeignTrialDir when ``out_dir`` holds another config's trial: resuming there would adopt its
    checkpoint and rows.  The message names the directory and the keys that differ.  No config.yaml (a new
    directory) or an unreadable one (its checkpoints' manifests still say whose they are) passes."""
    try:
        stored = read_config(Path(out_dir))
    except (OSError, ValueError):
        return
    if trial_id(stored) == trial_id(config):
        return
    mine, theirs = identity_config(config), identity_config(stored)
    differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k))
    shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ[:3])
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    raise ForeignTrialDir(
        f"{out_dir} holds another trial's results (trial {trial_id(stored)}; its {CONFIG_FILE} differs in "
        f"{shown}{more}); nothing was written: choose another out= directory, or remove that one"
    )


def cell_id(config: Mapping[str, Any]) -> str:
    """The trial hash without the seed: one id per experimental condition (task included)."""
    return config_digest({k: v for k, v in identity_config(config).items() if k != "seed"})


# ------------------------------------------------------------------ reading and writing
def format_value(value: Any) -> str:
    """Short, stable text for a config value in a cell's name: the orchestrator's cell names (trial.json, W&B
    groups) and analysis's figure labels spell a value alike (1e-04 -> 1e-4, 0.25 -> 0.25, None -> none)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it, which races
    with other threads creating files); from /proc where there is one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, create_parent: bool = True) -> None:
    """Write via a temp file and rename, so a reader never sees half a file.  The file gets the mode an ordinary
    ``open`` would give it (0o666 less the umask): ``mkstemp`` makes it 0600, readable by its writer alone, and a
    colleague's analysis or planner then reads the store as empty (issue #19).  ``create_parent=False``: a
    missing directory is an error (FileNotFoundError), never made again (a trial directory that vanished)."""
    if create_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(text)
            handle.flush()
            # durable before the rename: after a power loss the name never points at an empty file (#19)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class TrialStatus:
    """A trial's ``status.json``: where it is in the status machine and what its runs recorded.  Frozen: a
    writer makes the next one with ``dataclasses.replace``.

    On disk it is the JSON object it always was (``to_json``): the state under the key ``status``, every other
    field under its own name, and a field at its empty value (None, False, no fallbacks) left out, as the
    dict writers before this record left the key out; ``resumed_from_frame`` goes with ``started_at`` (the
    worker writes both when a run starts, null for a fresh start).  ``from_json`` reads any object: a missing
    or unknown state reads as ``new`` (what ``state_of`` made of it before), a value of the wrong type as
    absent, and keys this record does not know are kept in ``extra`` and written back after the others.
    """

    state: str  # one of STATUSES; never written as NEW (read so from a file without a known state)
    frame: int | None = None  # frames trained (metrics.csv holds rows to here)
    num_frames: int | None = None  # frames planned (the trial's config)
    wall_time_s: float | None = None  # wall time of all its runs together
    started_at: str | None = None  # ISO time the latest run started
    resumed_from_frame: int | None = None  # the latest run's checkpoint frame (None: it started fresh)
    pack_size: int | None = None  # members of the pack the latest run trained in
    checkpoint_fallbacks: tuple[dict[str, Any], ...] = field(default=(), hash=False)  # {at, note, [resumed_from_frame]}
    error: str | None = None  # why it ended diverged, failed or interrupted
    traceback: str | None = None  # of a failed run
    store_error: bool = False  # interrupted because the store refused a write
    checkpoint_frame: int | None = None  # of an interrupted run: where a rerun resumes
    finished_at: str | None = None  # ISO time the latest run ended
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # keys this version does not know

    def __post_init__(self) -> None:
        if self.state not in STATUSES:
            raise ValueError(f"trial state {self.state!r}: expected one of {', '.join(STATUSES)}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``status.json``: the keys and values the dict writers wrote."""
        out: dict[str, Any] = {"status": self.state}
        for spec in fields(self):
            if spec.name in ("state", "extra"):
                continue  # the state is written under "status" (above), unknown keys after the others (below)
            value = getattr(self, spec.name)
            if spec.name == "checkpoint_fallbacks":
                value = [dict(entry) for entry in value] or None
            if (value is not None and value is not False) or (spec.name == "resumed_from_frame" and self.started_at):
                out[spec.name] = value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out and k not in _STATUS_KEYS}}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TrialStatus:
        """A record of any JSON object read from ``status.json`` (see the class: nothing in it raises)."""
        state = value.get("status")
        known: dict[str, Any] = {"state": state if state in STATUSES else NEW}
        for name, kind in _STATUS_TYPES.items():
            item = value.get(name)
            if kind is int and isinstance(item, float) and item.is_integer():
                item = int(item)
            elif kind is float and isinstance(item, int) and not isinstance(item, bool):
                item = float(item)
            if isinstance(item, kind) and (kind is bool or not isinstance(item, bool)):
                known[name] = item
        fallbacks = value.get("checkpoint_fallbacks")
        if isinstance(fallbacks, list):
            known["checkpoint_fallbacks"] = tuple(dict(entry) for entry in fallbacks if isinstance(entry, dict))
        extra = {k: v for k, v in value.items() if k not in _STATUS_KEYS}
        return cls(**known, extra=extra)


# The fields of TrialStatus read by type, from its declaration (`int | None` -> int; checkpoint_fallbacks is read on
# its own), and every key it owns.
_STATUS_TYPES: dict[str, type] = {
    name: next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
    for name, hint in typing.get_type_hints(TrialStatus).items()
    if name not in ("state", "checkpoint_fallbacks", "extra")
}
_STATUS_KEYS = frozenset({"status", "checkpoint_fallbacks", *_STATUS_TYPES})


def write_status(out_dir: Path, status: TrialStatus) -> None:
    """Atomically, or, when the disk is too full for a new file, in place over the old one if the new
    text fits in it (a status must be able to say ``interrupted`` on a full disk)."""
    if status.state not in STATUSES[1:]:
        raise ValueError(f"status {status.state!r}: expected one of {', '.join(STATUSES[1:])}")
    path = Path(out_dir) / STATUS_FILE
    text = json.dumps(status.to_json(), indent=2) + "\n"
    try:
        # Never into a trial directory made again: one renamed or deleted while its trial ran stays gone, and
        # its trial is not recorded anywhere as finished (issue #19).
        atomic_write_text(path, text, create_parent=False)
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


# The largest small file (status.json, trial.json, config.yaml, a manifest) a reader takes from a store: the
# worker writes a few KiB; a larger one was put there by someone else and costs its trial, not the reader's memory.
MAX_SMALL_FILE_BYTES = 1 << 20


class NotARegularFile(OSError):
    """A store path that is not a regular file (a FIFO, a device, a socket, a directory): never read, since
    reading a FIFO blocks forever (issue #19); or a small file too large to be the worker's."""

    def __init__(self, path: Path | str, what: str):
        super().__init__(errno.EINVAL, what, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


def open_regular(path: Path | str) -> int:
    """A read-only descriptor of ``path`` once it is known to be a regular file.  O_NONBLOCK: opening a FIFO
    with no writer would otherwise block before fstat could look at it.  Raises NotARegularFile (an OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(path, f"{_file_kind(mode)}, not a regular file: not read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_bytes(path: Path | str, limit: int | None = None) -> bytes:
    """The bytes of a regular file (see ``open_regular``); over ``limit`` bytes raises NotARegularFile."""
    with os.fdopen(open_regular(path), "rb") as handle:
        if limit is not None and os.fstat(handle.fileno()).st_size > limit:
            raise NotARegularFile(path, f"larger than {limit:,} bytes: not read")
        return handle.read()


def read_regular_text(path: Path | str, limit: int | None = None) -> str:
    """Text (UTF-8) of a regular file; a file that is not text raises UnicodeDecodeError (a ValueError)."""
    return read_regular_bytes(path, limit).decode()


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON file holding an object, or None when it is missing, unreadable, torn, not a regular file or
    something else: every JSON file of the store (status, trial.json, manifests) is read so, and a bad one never
    stops a reader."""
    try:
        value = json.loads(read_regular_text(path, MAX_SMALL_FILE_BYTES))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_config(out_dir: Path) -> dict[str, Any]:
    """A trial's ``config.yaml`` as a mapping.  Raises OSError (missing, unreadable, not a regular file) or
    ValueError (not text, not YAML, an alias bomb, not a mapping), each saying what is wrong."""
    path = Path(out_dir) / CONFIG_FILE
    try:
        text = read_regular_text(path, MAX_SMALL_FILE_BYTES)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not text") from None
    value = load_yaml(text, str(path), strict=False)
    if not isinstance(value, dict):
        raise YamlError(f"{path}: a {type(value).__name__}, not a mapping of config keys")
    return value


def read_status(out_dir: Path) -> TrialStatus | None:
    """The trial's status, or None when status.json is missing, unreadable, torn or not a JSON object (the
    trial runs again from its checkpoint); a readable object with a missing or unknown state reads as ``new``."""
    value = read_json_object(Path(out_dir) / STATUS_FILE)
    return None if value is None else TrialStatus.from_json(value)


def state_of(status: TrialStatus | None, has_metrics: bool = False) -> str:
    """A status.json's place in the status machine.  Without a readable one: ``running`` when metrics exist
    (the worker writes its status first, so it was lost; the trial is unfinished either way), else ``new``.
    A rerun runs every unfinished trial from its latest intact checkpoint."""
    if status is None:
        return RUNNING if has_metrics else NEW
    return status.state


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
    text = read_regular_text(path)
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
        marker = Path(out_dir) / CHECKPOINT_DIR / CHECKPOINT_META
        return int(json.loads(read_regular_text(marker, MAX_SMALL_FILE_BYTES))["frame"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume_frame(out_dir: Path) -> int:
    """Frames a trial already has: all of them when finished, else where its checkpoint resumes."""
    status = read_status(Path(out_dir))
    if status is not None and status.state in FINISHED_STATUSES:
        return status.frame or 0
    return checkpoint_frame(out_dir) or 0


def is_done(out_dir: Path) -> bool:
    return trial_state(out_dir) in FINISHED_STATUSES
