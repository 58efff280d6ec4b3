"""The result store on disk, defined once (issue #12): layout, file names, trial and cell ids, the status
writer (the machine itself: ``contract.status``) and the readers of what the worker writes.  The worker
(agent), the orchestrator and analysis all use this module; like all of ``contract`` it imports neither torch
nor any other part of bnsweep (``make lint`` checks it), so analysis reads a store with it on a machine that has
neither.

Layout: ``<results>/<grid>/<trial_id>/`` holds ``config.yaml`` (the resolved config), ``metrics.csv``,
``status.json``, ``trial.json`` (where and as what the trial ran, by the orchestrator) and the checkpoints
(``contract/checkpoints.py`` names them, ``agent/checkpoint.py`` writes and reads them); beside the trial
directories, ``_ray/`` (Ray Tune's experiment state), ``_sweep/`` (what each profile last asked for) and the
sweep lock.

A trial's id is a hash of its resolved config without the placement-only keys (where and how it runs, not what
it computes) and without keys added later at their neutral values, so a stored trial keeps its id when a key is
added; the cell id is the same hash without ``seed``: all seeds of one experimental condition share it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from contract.checkpoints import CHECKPOINT_META, LATEST, frame_of
from contract.files import (  # noqa: F401 - the store's file primitives: callers take them from here too
    MAX_SMALL_FILE_BYTES,
    STORE_ERRNOS,
    NotARegularFile,
    StoreWriteError,
    atomic_write_text,
    current_umask,
    open_regular,
    overwrite_in_place,
    read_json_object,
    read_regular_bytes,
    read_regular_text,
)
from contract.modes import BATCH_STAT_NORMS, DEFAULT_BN_MODE, step_is_train
from contract.status import (  # noqa: F401 - the status machine: callers take it from here too
    COMPLETED,
    DIVERGED,
    FAILED,
    FINISHED_STATUSES,
    INTERRUPTED,
    NEW,
    RUNNING,
    STATUSES,
    TRANSITIONS,
    UNFINISHED_STATUSES,
    Status,
    StatusTransitionError,
    TrialStatus,
    check_transition,
)
from contract.yamlio import YamlError, load_yaml

# ------------------------------------------------------------------ layout
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
STATUS_FILE = "status.json"
CHECKPOINT_DIR = LATEST  # the latest complete checkpoint (contract/checkpoints.py: all their names)
TRIAL_FILE = "trial.json"  # written by the orchestrator: where and as what the trial ran


RAY_DIR = "_ray"  # Ray Tune's experiment state, beside the trial directories
SWEEP_DIR = "_sweep"  # what each profile of the grid last asked for (trial list, grid text)
LOCK_FILE = ".sweep.lock"


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
    "critic_i_stats": "mode",
    "critic_target": "soft",
}


def _q_bias_bn_stats_is_neutral(config: Mapping[str, Any]) -> bool:
    """q_bias_bn_stats changes a measurement only where a critic BN layer runs Critic-I in train mode: there only
    ``eval_batch`` measures what trials stored before the key measured; ``update`` measures something new."""
    if config.get("q_bias_bn_stats") == "eval_batch" or config.get("critic_norm") not in BATCH_STAT_NORMS:
        return True
    return not step_is_train(config.get("bn_mode") or DEFAULT_BN_MODE, "critic_i")


def uses_batch_renorm(config: Mapping[str, Any]) -> bool:
    """Whether some network of ``config`` has Batch Renormalization, the only place its settings compute anything."""
    return "batch_renorm" in (config.get("actor_norm"), config.get("critic_norm"), config.get("encoder_norm"))


def _renorm_is_unused(config: Mapping[str, Any]) -> bool:
    return not uses_batch_renorm(config)


# Keys added later whose neutrality depends on the rest of the config (ID_NEUTRAL_DEFAULTS: a fixed value).
ID_NEUTRAL_WHEN: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "q_bias_bn_stats": _q_bias_bn_stats_is_neutral,
    "renorm_r_max": _renorm_is_unused,
    "renorm_d_max": _renorm_is_unused,
    "renorm_warmup_steps": _renorm_is_unused,
}


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


def write_status(out_dir: Path, status: TrialStatus) -> None:
    """Atomically, or, when the disk is too full for a new file, in place over the old one if the new
    text fits in it (a status must be able to say ``interrupted`` on a full disk).  Only along an edge of the
    status machine from the state on disk (StatusTransitionError otherwise): a finished trial is never made
    unfinished, nor a fresh one finished without having run."""
    if Path(out_dir).is_dir():  # a vanished trial directory is refused by the write below, in the store's one line
        check_transition(trial_state(Path(out_dir)), status.state)
    path = Path(out_dir) / STATUS_FILE
    text = json.dumps(status.to_json(), indent=2) + "\n"
    try:
        # Never into a trial directory made again: one renamed or deleted while its trial ran stays gone, and
        # its trial is not recorded anywhere as finished (issue #19).
        atomic_write_text(path, text, create_parent=False)
    except OSError as err:
        if not overwrite_in_place(path, text):
            raise StoreWriteError(err, path, "the trial status") from err


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


def state_of(status: TrialStatus | None, has_metrics: bool = False) -> Status:
    """A status.json's place in the status machine.  Without a readable one: ``running`` when metrics exist
    (the worker writes its status first, so it was lost; the trial is unfinished either way), else ``new``.
    A rerun runs every unfinished trial from its latest intact checkpoint."""
    if status is None:
        return RUNNING if has_metrics else NEW
    return status.state


def trial_state(out_dir: Path) -> Status:
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
