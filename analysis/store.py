"""Read a result store (``<results>/<grid>/<trial_id>/``) into tidy pandas tables.

Two tables come out of ``load_store``:

- ``Store.data``: one row per trial x log point, the trial's config columns and the method.md §7
  metrics (empty cells are NaN; eval rows and training rows stay separate rows, as written);
- ``Store.trials``: one row per trial (also trials with no metrics yet), with status and labels.

Every trial gets a ``grid`` (``trial.json`` or its parent directory's name), a ``method``
("Origin", "LayerNorm", "MA-BN", "BN (TTTTT)", "BN <mode>") and a ``cell`` label: the method plus
the other axes that vary within its grid (lr, rho, optimizer, the orchestrator's profile when there are
several, ...).  Cells never include the task or the seed, so one cell can be compared across tasks; statistics
are always taken per (task, cell).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.checkpoints import CHECKPOINT_DIRS
from contract.metrics import EVAL_RETURN, FRAME, METRIC_NAMES
from contract.store import (
    CONFIG_FILE,
    FINISHED_STATUSES,
    METRICS_FILE,
    PLACEMENT_KEYS,
    PLAIN_NAME_RULE,
    STATUS_FILE,
    TRIAL_FILE,
    cell_id,
    config_digest,
    format_value,
    is_plain_name,
    read_config,
    read_json_object,
    read_regular_text,
    read_status,
    state_of,
)

FINISHED = FINISHED_STATUSES  # trials whose last evaluation is a final result
# Directories that are never trials and never hold trials (worker checkpoints, W&B runs, Ray Tune and
# orchestrator state such as _ray/ and _sweep/); dot-directories are skipped too.
SKIP_DIRS = (*CHECKPOINT_DIRS, "wandb")

# Keys that never separate cells: the seed, bookkeeping and speed options with the same learning semantics.
NON_CELL_KEYS = (
    "seed",
    "task",
    *PLACEMENT_KEYS,
    "checkpoint_every_frames",
    "checkpoint_replay",
    "channels_last",
    "use_task_presets",
)
# Keys set by DrQ-v2's per-task presets (method.md §1). In a multi-task grid they differ between tasks without being
# an experimental axis (e.g. walker batch 512, humanoid lr 8e-5), so they are dropped from the cell identity
# when they are constant within every task.
TASK_PRESET_KEYS = (
    "num_frames",
    "stddev_schedule",
    "lr",
    "feature_dim",
    "action_repeat",
    "frame_stack",
    "nstep",
    "batch_size",
    "replay_capacity",
)
# The orchestrator's profile (trial.json), labelled like a config key when a grid holds trials of several profiles.
PROFILE_KEY = "profile"
# Keys that define the method label; other varying keys are appended to it.
METHOD_KEYS = ("actor_norm", "critic_norm", "bn_mode")

MA_BN_MODE = "TTETT"
METHOD_ORDER = ("Origin", "LayerNorm", "BN (TTTTT)", "MA-BN")  # fixed order of the paper's four methods

# Derived columns added by the loader, in the order they lead each table.
ID_COLUMNS = ("grid", "trial", "trial_id", "cell", "method", "cell_id", "task", "seed", "status")


class StoreError(Exception):
    """The directory cannot be read as a result store; the message says what was expected."""


@dataclass
class Store:
    root: Path
    data: pd.DataFrame  # one row per trial x log point
    trials: pd.DataFrame  # one row per trial
    warnings: list[str] = field(default_factory=list)  # unreadable trials etc., shown in the report
    # {task: lowest finite evaluation return of any trial of the whole store on it}: the `task_min` floor a
    # diverged trial scores (analysis.summary). Store-wide, so a grid's sub-store uses the same floor.
    eval_floors: dict[str, float] = field(default_factory=dict)

    @property
    def grids(self) -> list[str]:
        return sorted(self.trials["grid"].unique())

    def grid(self, name: str) -> Store:
        """The part of the store that belongs to one grid."""
        return Store(
            self.root,
            self.data[self.data["grid"] == name].reset_index(drop=True),
            self.trials[self.trials["grid"] == name].reset_index(drop=True),
            list(self.warnings),
            dict(self.eval_floors),
        )


# ------------------------------------------------------------------ labels
def method_label(config: Mapping[str, Any]) -> str:
    """The method a config runs: Batch Renormalization (by its mode) wins over BN (by its mode), which wins over
    LayerNorm, which wins over none."""
    norms = (config.get("actor_norm"), config.get("critic_norm"))
    if "batch_renorm" in norms:
        return f"BRN {config.get('bn_mode') or MA_BN_MODE}"
    if "batch_norm" in norms:
        mode = config.get("bn_mode") or MA_BN_MODE  # the worker resolves an absent mode to MA-BN
        if mode == MA_BN_MODE:
            return "MA-BN"
        if mode == "TTTTT":
            return "BN (TTTTT)"
        return f"BN {mode}"
    if "layer_norm" in norms:
        return "LayerNorm"
    return "Origin"


def method_sort_key(method: str) -> tuple[int, str]:
    if method in METHOD_ORDER:
        return (METHOD_ORDER.index(method), "")
    return (len(METHOD_ORDER), method)


AXIS_NAMES = {
    "buffer_mix_ratio": "ρ",
    "critic_i_stats": "Critic-I stats",
    "critic_target": "target network",
    "target_bn_stats": "target stats",
    "sgd_momentum": "momentum",
    "actor_norm": "actor",
    "critic_norm": "critic",
}


def axis_text(key: str, value: Any) -> str:
    if key == "optimizer":
        return {"adam": "Adam", "sgd": "SGD"}.get(str(value), str(value))
    return f"{AXIS_NAMES.get(key, key)}={format_value(value)}"


def _sortable(value: Any) -> tuple[int, Any]:
    """Numbers before text, None first: a total order over mixed config values."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value))
    return (2, str(value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def cell_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The config keys that separate cells within one grid (see the module docstring).

    A key that varies in the grid but is constant within each context (a task, and the orchestrator's profile
    when the grid holds trials of several) is set by that context, not an axis: task presets across tasks,
    and a profile's base settings (pixels vs states, network width, ...) across profiles.
    """
    keys = sorted({k for c in configs for k in c})
    varying = []
    for key in keys:
        if key in NON_CELL_KEYS:
            continue
        values = [c.get(key) for c in configs]
        if any(not _same(v, values[0]) for v in values[1:]):
            varying.append(key)
    contexts = [(c.get("task"), c.get(PROFILE_KEY)) for c in configs]
    several_tasks = len({task for task, _ in contexts}) > 1
    several_profiles = len({profile for _, profile in contexts}) > 1
    kept = []
    for key in varying:
        candidate = (several_tasks and key in TASK_PRESET_KEYS) or (
            several_profiles and key not in (*METHOD_KEYS, PROFILE_KEY)
        )
        if candidate:
            per_context: dict[Any, set[str]] = {}
            for context, c in zip(contexts, configs, strict=True):
                per_context.setdefault(context, set()).add(repr(c.get(key)))
            if all(len(v) == 1 for v in per_context.values()):
                continue  # set by the task or the profile, not an axis
        kept.append(key)
    return kept


def label_cells(configs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(cell label, cell key hash) for each config of one grid."""
    keys = cell_keys(configs)
    extra = [k for k in keys if k not in METHOD_KEYS]
    labels = []
    for c in configs:
        parts = [method_label(c)] + [axis_text(k, c.get(k)) for k in extra]
        labels.append(", ".join(parts))
    # Two different conditions with one label (e.g. BN critic with and without a BN actor): spell out the norms.
    identity = [config_digest({k: c.get(k) for k in keys}) for c in configs]
    by_label: dict[str, set[str]] = {}
    for label, ident in zip(labels, identity, strict=True):
        by_label.setdefault(label, set()).add(ident)
    for i, c in enumerate(configs):
        if len(by_label[labels[i]]) > 1:
            norms = [axis_text(k, c.get(k)) for k in ("actor_norm", "critic_norm") if k in keys]
            labels[i] = ", ".join([labels[i], *norms])
    return list(zip(labels, identity, strict=True))


def cell_sort_key(label: str, config: Mapping[str, Any], keys: Iterable[str]) -> tuple:
    return (method_sort_key(method_label(config)), tuple(_sortable(config.get(k)) for k in keys), label)


# ------------------------------------------------------------------ discovery
def find_trial_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) that holds a config.yaml, sorted; trials don't nest."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if CONFIG_FILE in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # checkpoint/, wandb/ ... below a trial are the trial's own
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")) and d not in SKIP_DIRS)
    return sorted(found)


# A frame beyond this is no trial's (the paper's longest run is 3M frames): a damaged or hostile file.
MAX_FRAME = 10**12


class TrialSetAside(ValueError):
    """One trial's files cannot be read as the worker writes them: the trial is left out with a warning (the
    message names the file and what is wrong); the rest of the store is read as usual."""


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv as floats; tolerant of a missing file, a header alone and a half-written last line.

    Raises TrialSetAside for a file the worker cannot have written: not a regular file (a FIFO would block the
    reader), not text, a frame that is not a whole number in [0, MAX_FRAME], or a metric of ±inf (the worker
    writes a non-finite value as an empty cell, and a diverged update ends the trial before it is logged)."""
    columns = [FRAME, *METRIC_NAMES]
    try:
        text = read_regular_text(path)
    except FileNotFoundError:
        text = ""
    except UnicodeDecodeError:
        raise TrialSetAside(f"{path}: not text (binary data); its rows are not read") from None
    except OSError as err:
        raise TrialSetAside(f"{path}: {err.strerror or err}") from None
    if "\0" in text:
        raise TrialSetAside(f"{path}: not text (NUL bytes); its rows are not read")
    if not text.endswith("\n"):
        # The worker appends whole lines; text after the last newline is a line still being written.
        text = text[: text.rfind("\n") + 1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns about skipped malformed lines
            frame = pd.read_csv(io.StringIO(text), on_bad_lines="skip")
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    except (pd.errors.ParserError, ValueError) as err:
        raise TrialSetAside(f"{path}: not a CSV table ({' '.join(str(err).split())[:200]})") from None
    for column in frame.columns:
        if not pd.api.types.is_float_dtype(frame[column]):
            # A half-written last line can leave text (e.g. "1.2e") in a numeric column: it becomes NaN.
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in columns:
        if column not in frame:
            frame[column] = np.nan
    frame = frame[frame[FRAME].notna()].copy()
    frames = frame[FRAME].to_numpy(dtype=float)
    bad = ~(np.isfinite(frames) & (frames >= 0) & (frames <= MAX_FRAME) & (frames == np.floor(frames)))
    if bad.any():
        raise TrialSetAside(f"{path}: frame {float(frames[bad][0]):g} is not a whole number in [0, {MAX_FRAME:.0e}]")
    values = frame.drop(columns=[FRAME]).to_numpy(dtype=float)
    if np.isinf(values).any():
        row, col = (int(i[0]) for i in np.nonzero(np.isinf(values)))
        name = [c for c in frame.columns if c != FRAME][col]
        raise TrialSetAside(
            f"{path}: {name} is {float(values[row, col]):g} at frame {int(frames[row])} (the worker never writes "
            f"an infinite value)"
        )
    frame[FRAME] = frame[FRAME].astype(np.int64)
    extra = [c for c in frame.columns if c not in columns]
    return frame[columns + extra].reset_index(drop=True)


def load_store(root: Path | str) -> Store:
    """Load every trial under ``root``; raise StoreError when there is nothing to load."""
    root = Path(root)
    if not root.exists():
        raise StoreError(f"{root}: no such directory (expected a result store <results>/<grid>/<trial_id>/)")
    if not root.is_dir():
        raise StoreError(f"{root}: not a directory (expected a result store <results>/<grid>/<trial_id>/)")
    if not any(root.iterdir()):
        raise StoreError(
            f"{root} is empty: run a sweep first (`make sweep`, or `python -m agent.train ... "
            f"out={root}/<grid>/<trial_id>`)"
        )
    dirs = find_trial_dirs(root)
    if not dirs:
        raise StoreError(
            f"{root} is not a result store: no trial directory (one holding {CONFIG_FILE}) found; "
            f"expected {root}/<grid>/<trial_id>/{CONFIG_FILE} with {METRICS_FILE} and {STATUS_FILE}"
        )
    problems: list[str] = []
    records: list[dict[str, Any]] = []  # one per readable trial: its files as read
    for path in dirs:
        rel = _printable(path.relative_to(root).as_posix())
        try:
            config = read_config(path)
        except (OSError, ValueError) as err:
            problems.append(f"{rel}: unreadable {CONFIG_FILE} ({_reason(err)}); skipped")
            continue
        meta = read_json_object(path / TRIAL_FILE) or {}
        try:
            metrics = read_metrics(path / METRICS_FILE)
        except TrialSetAside as err:
            problems.append(f"{rel}: {_reason(err)}; skipped")
            continue
        status = read_status(path)
        # A grid named by trial.json becomes a directory under `figures --out`: only a plain name is taken from
        # it (a directory's own name is one path component already).
        grid = meta.get("grid") or (path.parent.name if path != root else root.parent.name) or "store"
        if "grid" in meta and not is_plain_name(grid):
            problems.append(
                f"{rel}: {TRIAL_FILE} names the grid {_shown(grid)}, which is not a plain name ({PLAIN_NAME_RULE}); "
                f"skipped"
            )
            continue
        records.append(
            {
                "path": path,
                "rel": path.relative_to(root).as_posix() if path != root else path.name,
                "grid": grid,
                "config": config,
                "meta": meta,
                "metrics": metrics,
                "status": status,
            }
        )
    if not records:
        raise StoreError(f"{root}: no readable trial: " + "; ".join(problems))

    trial_rows, data_parts = [], []
    for grid in sorted({r["grid"] for r in records}):
        group = [r for r in records if r["grid"] == grid]
        # Label with the orchestrator's profile as if it were a config key (it only shows when it varies).
        configs = [{**r["config"], PROFILE_KEY: r["meta"].get(PROFILE_KEY)} for r in group]
        labels = label_cells(configs)
        keys = cell_keys(configs)
        # Cells in a fixed, meaningful order (paper methods first, then axes numerically), not alphabetically.
        first_key: dict[str, tuple] = {}
        for config, (label, _) in zip(configs, labels, strict=True):
            key = cell_sort_key(label, config, keys)
            first_key[label] = min(first_key.get(label, key), key)
        rank = {label: i for i, label in enumerate(sorted(first_key, key=first_key.__getitem__))}
        for record, (label, cell_key) in zip(group, labels, strict=True):
            config, meta, status, metrics = record["config"], record["meta"], record["status"], record["metrics"]
            ident = {
                "grid": grid,
                "trial": record["rel"],
                "trial_id": str(meta.get("trial_id") or record["path"].name),
                "cell": label,
                "method": method_label(config),
                "cell_id": str(meta.get("cell_id") or cell_id(config)),
                "task": str(config.get("task", "unknown")),
                "seed": config.get("seed"),
                "status": state_of(status, len(metrics) > 0),  # the status machine, read as the planner does
            }
            last_eval = metrics.loc[metrics[EVAL_RETURN].notna(), FRAME]
            info = {
                "cell_key": cell_key,
                "cell_rank": rank[label],
                "profile": meta.get(PROFILE_KEY),
                "planned_frames": status.num_frames
                if status is not None and status.num_frames is not None
                else config.get("num_frames"),
                "status_frame": status.frame if status is not None else None,
                "last_frame": int(metrics[FRAME].max()) if len(metrics) else None,
                "last_eval_frame": int(last_eval.max()) if len(last_eval) else None,
                "n_evals": int(len(last_eval)),
                "wall_time_s": status.wall_time_s if status is not None else None,
                "error": status.error if status is not None else None,
                "orchestrator_cell_name": meta.get("cell_name"),
                "path": str(record["path"]),
            }
            cfg = {
                (k if k not in ident and k not in info else f"config.{k}"): v
                for k, v in config.items()
                if k not in ("task", "seed")
            }
            trial_rows.append({**ident, **info, **cfg})
            if len(metrics):
                n = len(metrics)
                constant = {key: [value] * n for key, value in {**ident, "cell_rank": rank[label], **cfg}.items()}
                data_parts.append(pd.concat([pd.DataFrame(constant), metrics], axis=1))

    trials = pd.DataFrame(trial_rows)
    order = ["grid", "task", "cell_rank", "seed", "trial"]
    trials = trials.sort_values(order, key=_sort_column, kind="stable").reset_index(drop=True)
    if data_parts:
        data = pd.concat(data_parts, ignore_index=True)
        data = data.sort_values([*order, FRAME], key=_sort_column, kind="stable")
        data = data.reset_index(drop=True)
    else:
        data = pd.DataFrame(columns=[*ID_COLUMNS, FRAME, *METRIC_NAMES])
    return Store(root, data, trials, problems, eval_floors(data))


def _reason(err: BaseException) -> str:
    """One line saying what is wrong with a file, without repeating its path (the caller names the trial)."""
    text = " ".join(str(err).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def _printable(text: str) -> str:
    """A path for a one-line warning: as is, or its repr when it holds a newline or another control character."""
    return text if text.isprintable() else repr(text)


def _shown(value: Any) -> str:
    """A value read from the store, as a bounded repr for a warning (never its raw control characters)."""
    text = repr(value)
    return text[:80] + ("…" if len(text) > 80 else "")


def eval_floors(data: pd.DataFrame) -> dict[str, float]:
    """{task: the lowest finite evaluation return in ``data``}, every trial and status counted (the frame-0
    evaluation of an untrained policy included: it is a policy seen on the task)."""
    if data.empty:
        return {}
    returns = data[EVAL_RETURN].to_numpy(dtype=float)
    finite = data.loc[np.isfinite(returns), ["task", EVAL_RETURN]]
    return {str(task): float(value) for task, value in finite.groupby("task")[EVAL_RETURN].min().items()}


def _sort_column(column: pd.Series) -> pd.Series:
    # Seeds may be missing or mixed types; sort them as text-padded numbers so the order is total and stable.
    if column.name == "seed":
        return column.map(lambda v: f"{float(v):020.3f}" if isinstance(v, (int, float)) and v == v else str(v))
    return column.astype(str) if column.dtype == object else column


def load_metrics(root: Path | str) -> pd.DataFrame:
    """The tidy table alone: one row per trial x log point."""
    return load_store(root).data
