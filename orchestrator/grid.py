"""YAML grid -> validated list of trials (format reference: ``sweeps/README.md``).

Everything is checked here, before Ray starts or a result directory is created:
unknown keys, wrong types, values outside the allowed sets, empty axes,
duplicate cells, and finally every trial's full config through the worker's
own ``build_config`` (so cross-key rules such as "bn_mode needs batch_norm" are
the worker's, not a copy).  All problems are collected and reported together,
each naming the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent import config as agent_config
from agent.bn_modes import ALL_BN_MODES, STEP_NAMES, validate_bn_mode
from agent.config import DEFAULTS, EASY_TASKS, FIELDS, MEDIUM_TASKS, ConfigError, build_config, field_allowed
from agent.store import cell_id, trial_id
from orchestrator import SWEEPS_DIR

# ------------------------------------------------------------------ the format
TOP_KEYS = (
    "name",
    "description",
    "base",
    "frames",
    "axes",
    "cells",
    "tasks",
    "seeds",
    "resources",
    "pack",
    "max_concurrent",
    "max_failures",
    "ray_checkpoints",
    "wandb",
    "profiles",
)
PROFILE_KEYS = tuple(k for k in TOP_KEYS if k not in ("name", "profiles"))
RESOURCE_KEYS = ("cpu", "gpu")
WANDB_KEYS = ("project", "entity", "tags", "mode")
WANDB_MODES = ("online", "offline", "disabled")
TASK_GROUPS = ("easy", "medium", "hard", "gym_mujoco")
# Keys a grid must not set through `base`/axes/cells: they have their own grid key,
# and the placement keys are derived from `resources` so they never change a trial's id.
MANAGED_KEYS = {
    "seed": "seeds",
    "task": "tasks",
    "device": "resources.gpu (cuda when gpu > 0)",
    "torch_threads": "resources.cpu (torch threads = the trial's CPUs)",
    "env_threads": "resources.cpu (a pack steps its members' environments on its CPUs)",
}
DEFAULT_RESOURCES = {"cpu": 1, "gpu": 0}
DEFAULT_MAX_FAILURES = 2
DEFAULT_PACK = 1  # members per pack (issue #9): 1 = every trial is its own process, as before packing
GRID_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Named value lists usable in place of an axis list (`bn_mode: all`).  Every key with an
# allowed set (norms, optimizers, target_bn_stats, obs_type) also accepts `all`.
AXIS_PRESETS: dict[str, dict[str, tuple]] = {
    "bn_mode": {"all": ALL_BN_MODES},
    "lr": {
        "paper": (5e-5, 7.5e-5, 1e-4, 2e-4, 5e-4, 1e-3),  # SPEC §6
        "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    },  # SPEC §6 choice: SGD needs larger steps
    "buffer_mix_ratio": {"paper": (0.0, 0.25, 0.5, 1.0)},  # SPEC §8
}
TASK_PRESETS: dict[str, tuple[str, ...]] = {
    "easy": EASY_TASKS,
    "medium": MEDIUM_TASKS,
    # choice: the DMC tasks the normalization comparison runs on in the paper profile
    "paper": (
        "hopper_hop",
        "cheetah_run",
        "walker_run",
        "quadruped_walk",
        "finger_turn_hard",
        "reacher_hard",
        "acrobot_swingup",
        "cartpole_swingup",
    ),
}


class GridError(Exception):
    """A grid that must not run; ``messages`` name file, key path, value and what is allowed."""

    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the worker's full config plus where it belongs in the grid."""

    grid: str
    profile: str
    trial_id: str
    cell_id: str
    cell_name: str  # readable and unique per cell (task appended when the grid has several)
    variant: str  # the cell's name without the task: what is compared across tasks
    task: str
    seed: int
    config: dict[str, Any]  # TrialConfig.to_dict(), placement keys included
    axes: dict[str, Any]
    origin: str  # where in the YAML the cell comes from, for messages

    @property
    def num_frames(self) -> int:
        return int(self.config["num_frames"])

    def meta(self) -> dict[str, Any]:
        """The ``trial.json`` contract read by the analysis package."""
        return {
            "grid": self.grid,
            "trial_id": self.trial_id,
            "cell_id": self.cell_id,
            "cell_name": self.cell_name,
            "seed": self.seed,
            "task": self.task,
            "axes": self.axes,
            "variant": self.variant,
            "profile": self.profile,
        }


@dataclass
class Grid:
    name: str
    path: Path
    profile: str
    profiles: tuple[str, ...]
    description: str
    trials: list[TrialSpec]
    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    cells: tuple[str, ...]  # variant names, in order
    resources: dict[str, float]
    max_concurrent: int | None
    max_failures: int
    ray_checkpoints: bool = True
    wandb: dict[str, Any] = field(default_factory=dict)
    source_text: str = ""
    # Members per pack: placement, like `resources` (never part of a trial's id).  `pack_source` is
    # the key path that set it (`pack`, `profiles.paper.pack`; "" = the default; "--pack" from the CLI).
    pack: int = DEFAULT_PACK
    pack_source: str = ""

    @property
    def cpus_per_trial(self) -> float:
        return float(self.resources.get("cpu", 1))

    @property
    def gpus_per_trial(self) -> float:
        return float(self.resources.get("gpu", 0))


# ------------------------------------------------------------------ loading
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects repeated mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def available_grids() -> list[str]:
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def resolve_grid_path(ref: str) -> Path:
    """A path to a YAML file, or the name of a grid in ``sweeps/``."""
    candidate = Path(ref).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    if candidate.suffix in (".yaml", ".yml") or "/" in ref:
        raise GridError([f"{ref}: no such grid file"])
    named = SWEEPS_DIR / f"{ref}.yaml"
    if named.is_file():
        return named
    names = available_grids()
    close = difflib.get_close_matches(ref, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise GridError(
        [
            f"--grid {ref}: no grid named {ref!r}{hint}; grids in {SWEEPS_DIR}: {', '.join(names)}; "
            f"or give a path to a YAML file"
        ]
    )


def load_grid(ref: str | Path, profile: str) -> Grid:
    """Read, validate and expand a grid for one profile.  Raises GridError listing every problem."""
    path = resolve_grid_path(str(ref))
    text = path.read_text()
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise GridError([f"{path}: not valid YAML: {err}"]) from None
    return _GridBuilder(path, text).build(data, profile)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_MISSING = object()


class _GridBuilder:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.errors: list[str] = []

    # -------------------------------------------------------------- reporting
    def error(self, key_path: str, message: str) -> None:
        text = f"{self.path}: {key_path}: {message}" if key_path else f"{self.path}: {message}"
        if text not in self.errors:
            self.errors.append(text)

    def fail_if_errors(self) -> None:
        if self.errors:
            raise GridError(self.errors)

    # -------------------------------------------------------------- top level
    def build(self, data: Any, profile: str) -> Grid:
        if data is None:
            raise GridError(
                [f"{self.path}: the file is empty; a grid needs at least `base` or `axes` (see sweeps/README.md)"]
            )
        if not isinstance(data, Mapping):
            raise GridError(
                [f"{self.path}: expected a mapping of grid keys ({', '.join(TOP_KEYS)}), got {type(data).__name__}"]
            )
        top = self.check_level(data, "", TOP_KEYS)
        name = data.get("name", self.path.stem)
        if not isinstance(name, str) or not GRID_NAME_RE.fullmatch(name):
            self.error("name", f"{name!r}: must be a directory-safe name (letters, digits, _ . -)")
        profiles_raw = data.get("profiles", {}) or {}
        profiles: dict[str, dict] = {}
        if not isinstance(profiles_raw, Mapping):
            self.error("profiles", f"expected a mapping of profile name -> settings, got {type(profiles_raw).__name__}")
        else:
            for pname, pdata in profiles_raw.items():
                if not isinstance(pdata, Mapping):
                    self.error(
                        f"profiles.{pname}",
                        f"expected a mapping of grid keys ({', '.join(PROFILE_KEYS)}), got {type(pdata).__name__}",
                    )
                    continue
                profiles[str(pname)] = self.check_level(pdata, f"profiles.{pname}.", PROFILE_KEYS)
        if profiles and profile not in profiles:
            self.error("profiles", f"no profile {profile!r} in this grid; its profiles: {', '.join(profiles)}")
        self.fail_if_errors()
        # Expand every profile, not only the requested one: a broken paper profile is
        # reported while the local one is being tried, not after days on a cluster.
        chosen: Grid | None = None
        for pname in profiles or {profile: {}}:
            merged = self.merge(top, profiles.get(pname, {}), pname if profiles else None)
            grid = self.expand(str(name), pname, merged, tuple(profiles))
            if pname == profile:
                chosen = grid
        self.fail_if_errors()
        assert chosen is not None
        return chosen

    def check_level(self, data: Mapping, prefix: str, allowed_keys: Sequence[str]) -> dict[str, Any]:
        """Type-check one level (the top or a profile); return its values with config values coerced."""
        out: dict[str, Any] = {}
        for key, value in data.items():
            key_path = f"{prefix}{key}"
            if key not in allowed_keys:
                close = difflib.get_close_matches(str(key), allowed_keys, n=2)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                where = "a profile" if prefix else "a grid"
                extra = " (trial config keys go under `base`)" if key in FIELDS else ""
                self.error(key_path, f"unknown key {key!r}{hint}{extra}; allowed in {where}: {', '.join(allowed_keys)}")
                continue
            checker = getattr(self, f"check_{key}", None)
            out[key] = checker(value, key_path) if checker else value
        return out

    def check_name(self, value: Any, key_path: str) -> Any:
        return value

    def check_description(self, value: Any, key_path: str) -> Any:
        if not isinstance(value, str):
            self.error(key_path, f"{value!r}: expected text")
        return value

    def check_base(self, value: Any, key_path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(key_path, f"expected a mapping of trial config keys, got {type(value).__name__}")
            return {}
        return self.check_overrides(value, key_path)

    def check_overrides(self, value: Mapping, key_path: str) -> dict[str, Any]:
        out = {}
        for key, item in value.items():
            coerced = self.check_config_value(f"{key_path}.{key}", str(key), item)
            if coerced is not _MISSING:
                out[str(key)] = coerced
        return out

    def check_config_value(self, key_path: str, key: str, value: Any) -> Any:
        """One trial config key=value on its own; cross-key rules are checked per trial later."""
        if key in MANAGED_KEYS:
            self.error(key_path, f"{key!r} is set by the grid key `{MANAGED_KEYS[key]}`, not as a config value")
            return _MISSING
        if key not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            self.error(key_path, f"unknown trial config key {key!r}{hint}; all keys: `python -m agent.train --help`")
            return _MISSING
        try:
            coerced = _coerce(key, value)
        except ConfigError as err:
            self.error(key_path, str(err))  # the worker's message names key, value and expected type
            return _MISSING
        allowed = field_allowed(key)
        if allowed and coerced is not None and coerced not in allowed:
            self.error(key_path, f"{value!r} is not allowed; allowed: {', '.join(allowed)}")
            return _MISSING
        if key == "bn_mode" and coerced is not None:
            try:
                validate_bn_mode(coerced)
            except ValueError as err:
                self.error(key_path, f"{value!r}: {err}; or use `bn_mode: all` in axes for all 32")
                return _MISSING
        if isinstance(coerced, float) and not math.isfinite(coerced):
            self.error(key_path, f"{value!r}: must be a finite number")
            return _MISSING
        return coerced

    def check_frames(self, value: Any, key_path: str) -> Any:
        if isinstance(value, Mapping):
            out = {}
            for key, frames in value.items():
                key = str(key)
                if key not in TASK_GROUPS and not self.task_ok(key):
                    self.error(
                        f"{key_path}.{key}",
                        f"{key!r} is neither a task group ({', '.join(TASK_GROUPS)}) nor a known task",
                    )
                    continue
                out[key] = self.positive_int(frames, f"{key_path}.{key}")
            return out
        return self.positive_int(value, key_path)

    def positive_int(self, value: Any, key_path: str, minimum: int = 1) -> Any:
        try:
            coerced = _coerce("num_frames", value)  # int coercion incl. "1e6"-style YAML strings
        except ConfigError:
            coerced = None
        if coerced is None or coerced < minimum:
            self.error(key_path, f"{value!r}: expected an integer >= {minimum}")
            return _MISSING
        return coerced

    def check_axes(self, value: Any, key_path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(
                key_path,
                "expected a mapping: config key -> list of values, or axis name -> "
                "{variant name: {config key: value, ...}}",
            )
            return {}
        out: dict[str, Any] = {}
        for axis, values in value.items():
            axis = str(axis)
            path = f"{key_path}.{axis}"
            if values is None:
                if key_path.startswith("profiles."):
                    out[axis] = None  # a profile removes this axis
                else:
                    self.error(path, "empty axis: give at least one value (or remove the axis)")
                continue
            if axis in MANAGED_KEYS:
                self.error(path, f"{axis!r} is set by the grid key `{MANAGED_KEYS[axis]}`, not as an axis")
            elif axis in FIELDS:
                out[axis] = self.check_value_axis(axis, values, path)
            elif isinstance(values, Mapping):
                out[axis] = self.check_bundle_axis(values, path)
            else:
                close = difflib.get_close_matches(axis, list(FIELDS), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                self.error(
                    path,
                    f"{axis!r} is not a trial config key{hint}; an axis is either a config key with "
                    f"a list of values, or a named axis mapping variant names to config values",
                )
        return out

    def check_value_axis(self, key: str, values: Any, path: str) -> tuple | object:
        if isinstance(values, str):
            presets = dict(AXIS_PRESETS.get(key, {}))
            if field_allowed(key):
                presets.setdefault("all", tuple(field_allowed(key)))
            if values in presets:
                return tuple(presets[values])
            named = ", ".join(presets) if presets else "none for this key"
            self.error(path, f"{values!r}: expected a list of values or a preset name (presets: {named})")
            return _MISSING
        if isinstance(values, Mapping):
            self.error(
                path,
                f"{key!r} is a trial config key, so this axis takes a list of values; a named axis "
                f"(variant name -> config values) needs a name that is not a config key, e.g. "
                f"'{key}_choice'",
            )
            return _MISSING
        if not isinstance(values, list):
            self.error(path, f"{values!r}: expected a list of values")
            return _MISSING
        if not values:
            self.error(path, "empty axis: give at least one value (or remove the axis)")
            return _MISSING
        out = []
        for i, item in enumerate(values):
            coerced = self.check_config_value(f"{path}[{i}]", key, item)
            if coerced is _MISSING:
                continue
            if coerced in out:
                self.error(
                    f"{path}[{i}]",
                    f"{item!r}: duplicate value (already at [{out.index(coerced)}]); each axis value must be distinct",
                )
                continue
            out.append(coerced)
        return tuple(out)

    def check_bundle_axis(self, variants: Mapping, path: str) -> dict[str, dict] | object:
        if not variants:
            self.error(path, "empty axis: give at least one variant (name: {config key: value})")
            return _MISSING
        out = {}
        for vname, overrides in variants.items():
            vpath = f"{path}.{vname}"
            if overrides is None:
                overrides = {}
            if not isinstance(overrides, Mapping):
                self.error(vpath, f"{overrides!r}: expected a mapping of trial config keys for variant {vname!r}")
                continue
            out[str(vname)] = self.check_overrides(overrides, vpath)
        return out

    def check_cells(self, value: Any, key_path: str) -> list[dict] | object:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key_path, "expected a list of cells, each a mapping with an optional `name` and config keys")
            return _MISSING
        out = []
        for i, cell in enumerate(value):
            path = f"{key_path}[{i}]"
            if not isinstance(cell, Mapping):
                self.error(path, f"{cell!r}: expected a mapping (name: ..., config keys)")
                continue
            cell = dict(cell)
            name = cell.pop("name", None)
            if name is not None and not isinstance(name, str):
                self.error(f"{path}.name", f"{name!r}: expected text")
                name = None
            if not cell:
                self.error(
                    path,
                    "a cell needs at least one config key (a cell equal to `base` alone is "
                    "written `cells: [{name: ..., <key>: <base value>}]`)",
                )
                continue
            out.append({"name": name, "overrides": self.check_overrides(cell, path), "origin": path})
        return out

    def task_ok(self, task: str) -> bool:
        try:
            agent_config_check_task(task)
        except ValueError:
            return False
        return True

    def check_tasks(self, value: Any, key_path: str) -> tuple[str, ...] | object:
        if isinstance(value, str):
            if value in TASK_PRESETS:
                return TASK_PRESETS[value]
            value = [value]  # one task; checked (with suggestions) below
        if not isinstance(value, list):
            self.error(key_path, f"{value!r}: expected a list of task names or a preset ({', '.join(TASK_PRESETS)})")
            return _MISSING
        if not value:
            self.error(key_path, "empty list: give at least one task")
            return _MISSING
        out: list[str] = []
        for i, task in enumerate(value):
            path = f"{key_path}[{i}]"
            if not isinstance(task, str):
                self.error(path, f"{task!r}: expected a task name such as cartpole_swingup or Hopper-v5")
                continue
            try:
                agent_config_check_task(task)
            except ValueError as err:
                self.error(path, f"{task!r}: {err}")
                continue
            if task in out:
                self.error(path, f"{task!r}: duplicate task")
                continue
            out.append(task)
        return tuple(out)

    def check_seeds(self, value: Any, key_path: str) -> tuple[int, ...] | object:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                self.error(key_path, f"{value!r}: a seed count must be >= 1 (or give a list of seeds)")
                return _MISSING
            return tuple(range(1, value + 1))
        if not isinstance(value, list) or not value:
            self.error(
                key_path, f"{value!r}: expected a non-empty list of integer seeds, or a count N meaning seeds 1..N"
            )
            return _MISSING
        out: list[int] = []
        for i, seed in enumerate(value):
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                self.error(f"{key_path}[{i}]", f"{seed!r}: a seed must be an integer >= 0")
            elif seed in out:
                self.error(f"{key_path}[{i}]", f"{seed!r}: duplicate seed")
            else:
                out.append(seed)
        return tuple(out)

    def check_resources(self, value: Any, key_path: str) -> dict[str, float] | object:
        if not isinstance(value, Mapping):
            self.error(key_path, f"{value!r}: expected a mapping like {{cpu: 1, gpu: 0.25}}")
            return _MISSING
        out = {}
        for key, amount in value.items():
            path = f"{key_path}.{key}"
            if key not in RESOURCE_KEYS:
                self.error(path, f"unknown resource {key!r}; allowed: {', '.join(RESOURCE_KEYS)}")
                continue
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount):
                self.error(path, f"{amount!r}: expected a number")
                continue
            if key == "cpu" and amount <= 0:
                self.error(path, f"{amount!r}: a trial needs cpu > 0")
                continue
            if key == "gpu" and (amount < 0 or (amount > 1 and amount != int(amount))):
                self.error(path, f"{amount!r}: gpu must be >= 0, a fraction of one GPU or a whole number")
                continue
            out[key] = amount
        return out

    def check_pack(self, value: Any, key_path: str) -> int | object:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(
                key_path,
                f"{value!r}: expected a positive integer, the most trials one pack trains "
                f"together in one process (allowed: 1, 2, 3, ...; 1 = no packing)",
            )
            return _MISSING
        return value

    def check_max_concurrent(self, value: Any, key_path: str) -> int | None | object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(key_path, f"{value!r}: expected an integer >= 1 (or null for as many as resources allow)")
            return _MISSING
        return value

    def check_max_failures(self, value: Any, key_path: str) -> int | object:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.error(key_path, f"{value!r}: expected an integer >= 0 (retries of a crashed trial)")
            return _MISSING
        return value

    def check_ray_checkpoints(self, value: Any, key_path: str) -> bool | object:
        if not isinstance(value, bool):
            self.error(key_path, f"{value!r}: expected true or false")
            return _MISSING
        return value

    def check_wandb(self, value: Any, key_path: str) -> dict[str, Any] | object:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(key_path, f"{value!r}: expected a mapping with {', '.join(WANDB_KEYS)}")
            return _MISSING
        out = {}
        for key, item in value.items():
            path = f"{key_path}.{key}"
            if key not in WANDB_KEYS:
                self.error(path, f"unknown key {key!r}; allowed: {', '.join(WANDB_KEYS)}")
            elif key == "mode" and item not in WANDB_MODES:
                self.error(path, f"{item!r} is not allowed; allowed: {', '.join(WANDB_MODES)}")
            elif key == "tags" and not (isinstance(item, list) and all(isinstance(t, str) for t in item)):
                self.error(path, f"{item!r}: expected a list of strings")
            elif key in ("project", "entity") and item is not None and not isinstance(item, str):
                self.error(path, f"{item!r}: expected text")
            else:
                out[key] = item
        return out

    def check_profiles(self, value: Any, key_path: str) -> Any:
        return value  # checked level by level in build()

    # -------------------------------------------------------------- profiles
    def merge(self, top: Mapping[str, Any], profile: Mapping[str, Any], pname: str | None) -> dict[str, Any]:
        """A profile is a partial grid over the top level: mappings merge key by key, the rest replaces."""
        merged = {k: v for k, v in top.items() if k not in ("name", "profiles")}
        for key, value in profile.items():
            if (
                key in ("base", "resources", "wandb", "axes")
                and isinstance(value, Mapping)
                and isinstance(merged.get(key), Mapping)
            ):
                combined = {**merged[key], **value}
                merged[key] = {k: v for k, v in combined.items() if v is not None} if key == "axes" else combined
            else:
                merged[key] = value
        for key in list(merged):
            if merged[key] is _MISSING:
                merged.pop(key)
        if "pack" in merged:
            merged["_pack_source"] = f"profiles.{pname}.pack" if "pack" in profile and pname else "pack"
        base = merged.get("base") or {}
        if "frames" in merged and "num_frames" in base:
            where = f" (profile {pname})" if pname else ""
            self.error("frames", f"both `frames` and `base.num_frames` are set{where}; use one")
        return merged

    # -------------------------------------------------------------- expansion
    def expand(self, name: str, profile: str, spec: Mapping[str, Any], profiles: tuple[str, ...]) -> Grid:
        where = f"profile {profile}: " if profiles else ""
        base = dict(spec.get("base") or {})
        axes = {k: v for k, v in (spec.get("axes") or {}).items() if v is not _MISSING}
        extra = spec.get("cells") or []
        tasks = tuple(spec.get("tasks") or (DEFAULTS.task,))
        seeds = tuple(spec.get("seeds") or (1,))
        resources = {**DEFAULT_RESOURCES, **(spec.get("resources") or {})}
        frames = spec.get("frames")

        # cells: the cartesian product of the axes, then the explicit extra cells
        cells: list[tuple[str, dict[str, Any], dict[str, Any], str]] = []  # (variant, overrides, labels, origin)
        if axes:
            axis_items = []
            for axis, values in axes.items():
                if isinstance(values, Mapping):  # named axis: variant name -> overrides
                    axis_items.append([(axis, vname, dict(ov)) for vname, ov in values.items()])
                else:
                    axis_items.append([(axis, value, {axis: value}) for value in values])
            for combo in itertools.product(*axis_items):
                overrides: dict[str, Any] = {}
                labels: dict[str, Any] = {}
                for axis, label, ov in combo:
                    for key, value in ov.items():
                        if key in overrides and overrides[key] != value:
                            self.error(
                                "axes",
                                f"{where}axes {axis!r} and another axis both set {key!r} "
                                f"({overrides[key]!r} vs {value!r}); an axis key may come from one "
                                f"axis only",
                            )
                    overrides.update(ov)
                    labels[axis] = label
                variant = ", ".join(f"{axis}={_fmt(label)}" for axis, label in labels.items())
                cells.append((variant, overrides, labels, f"axes ({variant})"))
        for cell in extra:
            overrides = dict(cell["overrides"])
            variant = cell["name"] or ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items())
            cells.append((variant, overrides, {}, f"{cell['origin']} ({variant})"))
        if not cells:
            cells.append(("base", {}, {}, "base"))

        seen_names: dict[str, str] = {}
        for variant, _, _, origin in cells:
            if variant in seen_names:
                self.error(
                    "cells",
                    f"{where}{origin}: cell name {variant!r} is used twice (also "
                    f"{seen_names[variant]}); cell names must be unique",
                )
            seen_names.setdefault(variant, origin)

        trials: list[TrialSpec] = []
        cpu, gpu = float(resources["cpu"]), float(resources["gpu"])
        placement = {
            "device": "cuda" if gpu > 0 else "cpu",
            "torch_threads": max(1, int(cpu)),
            "env_threads": max(1, int(cpu)),
        }
        by_cell: dict[str, str] = {}
        failed_cells: set[tuple[str, str]] = set()
        for seed in seeds:  # seed-major: a partial sweep already has one seed of every cell
            for task in tasks:
                for variant, overrides, labels, origin in cells:
                    if (variant, task) in failed_cells:
                        continue
                    values = {**base, **placement, "task": task, "seed": seed}
                    if frames is not None and "num_frames" not in overrides:
                        num = self.frames_for(frames, task, where)
                        if num is None:
                            failed_cells.add((variant, task))
                            continue
                        values["num_frames"] = num
                    values.update(overrides)
                    try:
                        config = build_config(values).to_dict()
                    except ConfigError as err:
                        # point at the YAML key that set the offending value when it is a base value
                        match = re.match(r"(\w+)=", str(err))
                        key = match.group(1) if match else None
                        path = f"base.{key}" if key and key in base and key not in overrides else ""
                        self.error(path, f"{where}{origin} with task={task}: {err}")
                        failed_cells.add((variant, task))
                        continue
                    cid = cell_id(config)
                    cell_key = f"{origin} with task={task}"
                    if by_cell.get(cid, cell_key) != cell_key:
                        self.error(
                            "",
                            f"{where}duplicate cells: {cell_key} and {by_cell[cid]} resolve to the same "
                            f"trial config (cell id {cid}); remove one",
                        )
                        failed_cells.add((variant, task))
                        continue
                    by_cell[cid] = cell_key
                    cell_name = variant if len(tasks) == 1 else f"{variant} @ {task}"
                    trials.append(
                        TrialSpec(
                            grid=name,
                            profile=profile,
                            trial_id=trial_id(config),
                            cell_id=cid,
                            cell_name=cell_name,
                            variant=variant,
                            task=task,
                            seed=seed,
                            config=config,
                            axes=dict(labels),
                            origin=origin,
                        )
                    )
        _fill_axes(trials, cells)
        return Grid(
            name=name,
            path=self.path,
            profile=profile,
            profiles=profiles,
            description=str(spec.get("description", "")).strip(),
            trials=trials,
            tasks=tasks,
            seeds=seeds,
            cells=tuple(c[0] for c in cells),
            resources=resources,
            max_concurrent=spec.get("max_concurrent"),
            max_failures=spec.get("max_failures", DEFAULT_MAX_FAILURES),
            ray_checkpoints=spec.get("ray_checkpoints", True),
            wandb=dict(spec.get("wandb") or {}),
            source_text=self.text,
            pack=spec.get("pack", DEFAULT_PACK),
            pack_source=spec.get("_pack_source", ""),
        )

    def frames_for(self, frames: Any, task: str, where: str) -> int | None:
        if not isinstance(frames, Mapping):
            return frames
        if task in frames:
            return frames[task]
        group = agent_config.task_group(task)
        if group in frames:
            return frames[group]
        self.error("frames", f"{where}no entry for task {task!r} (group {group}); give the task or its group")
        return None


def _fill_axes(trials: list[TrialSpec], cells: Sequence[tuple[str, dict, dict, str]]) -> None:
    """trial.axes = named-axis labels + every config key the grid varies, with the trial's resolved value.

    "Varies" means: set by an axis or a cell and taking more than one value across
    the grid's trials (so Origin gets ``bn_mode: null`` next to ``TTETT``).
    """
    explicit: list[str] = []
    for _, overrides, _, _ in cells:
        for key in overrides:
            if key not in explicit:
                explicit.append(key)
    varying = [k for k in explicit if len({repr(t.config[k]) for t in trials}) > 1]
    named = []
    for _, _, labels, _ in cells:
        for axis in labels:
            if axis not in FIELDS and axis not in named:
                named.append(axis)
    for trial in trials:
        labels = dict(trial.axes)
        trial.axes.clear()
        for axis in named:
            trial.axes[axis] = labels.get(axis)
        for key in varying:
            trial.axes[key] = trial.config[key]


def _coerce(key: str, value: Any) -> Any:
    """The worker's own coercion of YAML/CLI values (so "1e-4", which YAML reads as text, is a float)."""
    return agent_config.coerce_value(key, value)


def agent_config_check_task(task: str) -> None:
    from envs import check_task_name  # local: imports dm_control, only needed when tasks are checked

    check_task_name(task)


def bn_mode_columns(mode: str | None) -> dict[str, str | None]:
    """{'bn_mode.actor_i': 'T', ...} for dashboards that group by one update step's mode."""
    letters = mode if mode else [None] * len(STEP_NAMES)
    return {f"bn_mode.{step}": letter for step, letter in zip(STEP_NAMES, letters, strict=True)}
