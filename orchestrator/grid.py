"""YAML grid -> validated list of trials (format reference: ``sweeps/README.md``).

Everything is checked before Ray starts or a result directory is created: the file against the grid schema
(``orchestrator.grid_schema``: unknown keys, types, allowed values, empty axes), then, as the grid expands, duplicate
cells and every trial's full config through the worker's own ``build_config`` (so cross-key rules such as "bn_mode
needs batch_norm" are the worker's, not a copy). All problems are reported together, each naming the file, the key
path, the value and what is allowed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contract import config as agent_config
from contract.config import FIELD_DEFAULTS, FIELDS, ConfigError, build_config
from contract.grid_shows import PROFILES_DIR, grid_files
from contract.schema import did_you_mean
from contract.store import PLAIN_NAME_RULE, cell_id, format_value, is_plain_name, read_regular_text, trial_id
from contract.yamlio import MAX_YAML_BYTES, YamlError, load_yaml
from orchestrator import SWEEPS_DIR
from orchestrator.grid_schema import (
    DEFAULT_PACK,
    GridLevel,
    Profile,
    Resources,
    grid_messages,
    validate_grid,
    validate_shared_profile,
)

MAX_MESSAGE = 2000  # characters of one grid error
MERGED_KEYS = ("base", "resources", "wandb", "axes")  # a profile merges these key by key; other keys replace


class GridError(Exception):
    """A grid that must not run; ``messages`` name file, key path, value and what is allowed."""

    def __init__(self, messages: Sequence[str]):
        # a value quoted in a message can be as long as the file: each message stays readable
        self.messages = [m if len(m) <= MAX_MESSAGE else m[:MAX_MESSAGE] + " … (cut)" for m in messages]
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
def available_grids() -> list[str]:
    return [path.stem for path in grid_files(SWEEPS_DIR)]


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
    hint = did_you_mean(ref, names)
    raise GridError(
        [
            f"--grid {ref}: no grid named {ref!r}{hint}; grids in {SWEEPS_DIR}: {', '.join(names)}; "
            f"or give a path to a YAML file"
        ]
    )


def load_grid(ref: str | Path, profile: str) -> Grid:
    """Read, validate and expand a grid for one profile.  Raises GridError listing every problem."""
    path = resolve_grid_path(str(ref))
    try:
        text = read_regular_text(path, MAX_YAML_BYTES)
        data = load_yaml(text, str(path))  # bounded, repeated keys refused (contract.yamlio)
    except YamlError as err:
        raise GridError([str(err)]) from None
    except UnicodeDecodeError:
        raise GridError([f"{path}: not a text file"]) from None
    except OSError as err:
        raise GridError([f"{path}: cannot be read ({err.strerror or err})"]) from None
    return _GridBuilder(path, text).build(data, profile)


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
            raise GridError([f"{self.path}: expected a mapping of grid keys, got {type(data).__name__}"])
        try:
            spec = validate_grid(data)
        except ValidationError as err:
            raise GridError([f"{self.path}: {message}" for message in grid_messages(err)]) from None
        profiles = {name: self.profile(name, level) for name, level in spec.profiles.items()}
        self.fail_if_errors()
        if profiles and profile not in profiles:
            self.error("profiles", f"no profile {profile!r} in this grid; its profiles: {', '.join(profiles)}")
        self.fail_if_errors()
        # Expand every profile, not only the requested one: a broken paper profile is
        # reported while the local one is being tried, not after days on a cluster.
        top = _level(spec, "")
        name = spec.name or self.path.stem
        if not is_plain_name(name):  # it names the grid's directory in the store and under figures/
            where = "name" if spec.name else ""
            origin = "" if spec.name else f"the file name gives the grid name {name!r}: "
            self.error(
                where,
                f"{origin}{name!r} is not a plain grid name ({PLAIN_NAME_RULE}); "
                + ("change `name`" if spec.name else "rename the file or set `name:`"),
            )
            self.fail_if_errors()
        chosen: Grid | None = None
        for pname in profiles or {profile: {}}:
            merged = self.merge(top, profiles.get(pname, {}), pname if profiles else None)
            grid = self.expand(name, pname, merged, tuple(profiles))
            if pname == profile:
                chosen = grid
        self.fail_if_errors()
        assert chosen is not None
        return chosen

    # -------------------------------------------------------------- profiles
    def profile(self, pname: str, level: Profile) -> dict[str, Any]:
        """A profile's own keys over those of the shared profile it extends (merged as a profile over the top)."""
        own = _level(level, f"profiles.{pname}.")
        if level.extends is None:
            return own
        shared = self.shared_profile(f"profiles.{pname}.extends", level.extends)
        return _over(shared, own, drop_null_axes=False)  # a null axis still removes the top level's axis

    def shared_profile(self, key_path: str, ref: str) -> dict[str, Any]:
        path = shared_profile_path(self.path, ref)
        if not path.is_file():
            names = [p.stem for p in sorted(PROFILES_DIR.glob("*.yaml"))]
            self.error(
                key_path,
                f"{ref!r}: no such shared profile ({path}){did_you_mean(ref, names)}; shared profiles in "
                f"{PROFILES_DIR}: {', '.join(names)}, or give a path to a YAML file relative to the grid file",
            )
            return {}
        try:
            data = load_yaml(read_regular_text(path, MAX_YAML_BYTES), str(path))
            if not isinstance(data, Mapping):
                self.error(key_path, f"{ref!r}: {path} holds {type(data).__name__}, not a mapping of profile keys")
                return {}
            return _level(validate_shared_profile(data), f"{path}: ")
        except ValidationError as err:
            for message in grid_messages(err, shared_profile=True):
                if f"{path}: {message}" not in self.errors:  # two profiles may extend one file
                    self.errors.append(f"{path}: {message}")
        except (YamlError, UnicodeDecodeError, OSError) as err:
            self.error(key_path, f"{ref!r}: {path} cannot be read as a profile ({err})")
        return {}

    def merge(self, top: Mapping[str, Any], profile: Mapping[str, Any], pname: str | None) -> dict[str, Any]:
        """A profile is a partial grid over the top level: mappings merge key by key, the rest replaces."""
        merged = _over(top, profile, drop_null_axes=True)
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
        axes = dict(spec.get("axes") or {})
        extra = spec.get("cells") or []
        tasks = tuple(spec.get("tasks") or (FIELD_DEFAULTS["task"],))
        seeds = tuple(spec.get("seeds") or (1,))
        resources = Resources.model_validate(spec.get("resources") or {}).model_dump()  # with the defaults
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
                variant = ", ".join(f"{axis}={format_value(label)}" for axis, label in labels.items())
                cells.append((variant, overrides, labels, f"axes ({variant})"))
        for cell in extra:
            overrides = dict(cell["overrides"])
            variant = cell["name"] or ", ".join(f"{k}={format_value(v)}" for k, v in overrides.items())
            cells.append((variant, overrides, {}, f"{cell['origin']} ({variant})"))
        if not cells:
            cells.append(("base", {}, {}, "base"))

        seen_names: dict[str, str] = {}
        for variant, _, _, origin in cells:
            if not variant.isprintable():  # a newline or another control character would split every line naming it
                self.error("cells", f"{where}{origin}: cell name {variant!r} holds a control character (a newline?)")
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
        default = {key: info.default for key, info in GridLevel.model_fields.items()}  # the schema's, for keys unset
        return Grid(
            name=name,
            path=self.path,
            profile=profile,
            profiles=profiles,
            description=spec.get("description", default["description"]).strip(),
            trials=trials,
            tasks=tasks,
            seeds=seeds,
            cells=tuple(c[0] for c in cells),
            resources=resources,
            max_concurrent=spec.get("max_concurrent"),
            max_failures=spec.get("max_failures", default["max_failures"]),
            ray_checkpoints=spec.get("ray_checkpoints", default["ray_checkpoints"]),
            wandb=dict(spec.get("wandb") or {}),
            source_text=self.text,
            pack=spec.get("pack", default["pack"]),
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


def _over(under: Mapping[str, Any], over: Mapping[str, Any], drop_null_axes: bool) -> dict[str, Any]:
    """The keys of ``over`` over those of ``under``: mappings merge key by key, the rest replaces.

    ``drop_null_axes``: remove the axes ``over`` sets to null (the last merge; before it they stay, to remove the
    top level's axis)."""
    merged = dict(under)
    for key, value in over.items():
        if key in MERGED_KEYS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            combined = {**merged[key], **value}
            drop = drop_null_axes and key == "axes"
            merged[key] = {k: v for k, v in combined.items() if v is not None} if drop else combined
        else:
            merged[key] = value
    return merged


def shared_profile_path(grid_path: Path, ref: str) -> Path:
    """A profile's ``extends``: a name of a file in sweeps/profiles/, or a path relative to the grid file."""
    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        return PROFILES_DIR / f"{ref}.yaml"
    return (grid_path.parent / Path(ref).expanduser()).resolve()


def _level(level: GridLevel, prefix: str) -> dict[str, Any]:
    """A validated level (the top or a profile) as plain values: only the keys the file sets, and in `base`,
    axes and cells only the config keys they set; `null` axes kept (a profile's way to remove an axis). The keys
    that say what the grid is rather than which trials it runs are left out."""
    out = level.model_dump(exclude_unset=True, exclude={"name", "profiles", "extends", "figures", "claims"})
    if "cells" in out:
        out["cells"] = [
            {"name": cell.pop("name", None), "overrides": cell, "origin": f"{prefix}cells[{i}]"}
            for i, cell in enumerate(out["cells"])
        ]
    return out
