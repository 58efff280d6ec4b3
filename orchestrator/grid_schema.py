"""The grid format (``sweeps/*.yaml``) as one typed schema: validation, coercion and its JSON Schema.

``GridFile`` is a pydantic model (issue #12). Trial config values anywhere in a grid (``base``, an axis, a named
axis's variants, ``cells``) are checked by the worker's own field declarations (``contract.config.TrialFields``), so
a key's type, range and allowed values are declared once. Every problem of a file is reported at once, each
naming the key path, the value and what is allowed. Rules across keys (``bn_mode`` needs a BN network, buffer
mixing needs Critic-I = T) are the worker's and run per trial when the grid expands (``orchestrator.grid``). The
names a grid's ``figures`` and ``claims`` may use are the analysis's own (``analysis.plots.FIGURES``, the ids of
``analysis.claims.CLAIMS``), so they are declared once too.

``python -m orchestrator.grid_schema`` prints the JSON Schema; ``sweeps/grid.schema.json`` is that output, which
editors use to check a grid while it is written (sweeps/README.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)

from agent.bn_modes import ALL_BN_MODES
from analysis.claims import CLAIMS
from analysis.plots import FIGURES
from contract.config import (
    DESCRIPTIONS,
    EASY_TASKS,
    FIELDS,
    MEDIUM_TASKS,
    TASK_GROUPS,
    TaskName,
    TrialFields,
    field_allowed,
)
from contract.schema import (
    MODEL_CONFIG,
    At,
    Int,
    Number,
    allowed_text,
    did_you_mean,
    error_text,
    key_path,
    model_bounds,
    standard_bounds,
)
from contract.store import PLAIN_NAME_RULE, is_plain_name
from envs import check_task_name

# Keys a grid must not set through `base`/axes/cells: they have their own grid key,
# and the placement keys are derived from `resources` so they never change a trial's id.
MANAGED_KEYS = {
    "seed": "seeds",
    "task": "tasks",
    "device": "resources.gpu (cuda when gpu > 0)",
    "torch_threads": "resources.cpu (torch threads = the trial's CPUs)",
    "env_threads": "resources.cpu (a pack steps its members' environments on its CPUs)",
}
CONFIG_KEYS = tuple(k for k in FIELDS if k not in MANAGED_KEYS)
WandbMode = Literal["online", "offline", "disabled"]
DEFAULT_MAX_FAILURES = 2
DEFAULT_PACK = 1  # members per pack (issue #9): 1 = every trial is its own process, as before packing

# Named value lists usable in place of an axis list (`bn_mode: all`).  Every key with an
# allowed set (norms, optimizers, target_bn_stats, obs_type) also accepts `all`.
AXIS_PRESETS: dict[str, dict[str, tuple]] = {
    "bn_mode": {"all": ALL_BN_MODES},
    "lr": {
        "paper": (5e-5, 7.5e-5, 1e-4, 2e-4, 5e-4, 1e-3),  # method.md §6
        "sgd": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),  # method.md §6 choice: SGD needs larger steps
    },
    "buffer_mix_ratio": {"paper": (0.0, 0.25, 0.5, 1.0)},  # method.md §8
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


def axis_presets(key: str) -> dict[str, tuple]:
    presets = dict(AXIS_PRESETS.get(key, {}))
    allowed = field_allowed(key)
    if allowed:
        presets.setdefault("all", tuple(allowed))
    return presets


# ------------------------------------------------------------------ small checks
def _distinct(values: list, what: str) -> list:
    for i, value in enumerate(values):
        if value in values[:i]:
            raise At(f"{value!r}: duplicate {what} (already at [{values.index(value)}])", f"[{i}]")
    return values


def _tasks_input(value: Any) -> Any:
    if isinstance(value, str):
        return list(TASK_PRESETS.get(value, (value,)))  # a preset, or one task (checked with suggestions)
    if isinstance(value, list) and not value:
        raise ValueError("empty list: give at least one task")
    if not isinstance(value, list):
        raise ValueError(f"expected a list of task names or a preset ({', '.join(TASK_PRESETS)})")
    return value


MAX_SEEDS = 1000  # seeds of one grid: a count of 10**9 was a MemoryError, not a message


def _seeds_input(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise ValueError(f"a seed count must be 1 to {MAX_SEEDS} (or give a list of seeds)")
        return list(range(1, value + 1))
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of integer seeds, or a count N meaning seeds 1..N")
    if len(value) > MAX_SEEDS:
        raise ValueError(f"{len(value):,} seeds: at most {MAX_SEEDS} in one grid")
    return value


def _frames_keys(frames: dict[str, int]) -> dict[str, int]:
    for key in frames:
        if key not in TASK_GROUPS:
            try:
                check_task_name(key)
            except ValueError:
                message = f"{key!r} is neither a task group ({allowed_text(TASK_GROUPS)}) nor a known task"
                raise At(message, f".{key}") from None
    return frames


def _gpu_share(amount: float) -> float:
    if amount > 1 and amount != int(amount):
        raise ValueError("gpu must be >= 0, a fraction of one GPU or a whole number")
    return amount


def _pack_input(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "expected a positive integer, the most trials one pack trains together in one process "
            "(allowed: 1, 2, 3, ...; 1 = no packing)"
        )
    return value


def _grid_name(name: str) -> str:
    if not is_plain_name(name):  # the store's naming rule, defined once (contract.store)
        raise ValueError(f"{name!r} is not a plain grid name ({PLAIN_NAME_RULE})")
    return name


def _field_type(name: str) -> Any:
    info = FIELDS[name]
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


# ------------------------------------------------------------------ trial config values
class _Strict(BaseModel):
    """Frozen, unknown keys refused, YAML text coerced (contract.schema.MODEL_CONFIG)."""

    model_config = MODEL_CONFIG


# The trial config keys a grid may set (every key but the grid-managed ones), each optional: a mapping names only
# the keys it changes; `model_fields_set` says which.
ConfigValues = create_model(
    "ConfigValues",
    __base__=_Strict,
    __doc__="Trial config keys (`bnsweep train --help`); seeds, tasks and placement have grid keys of their own.",
    # FieldInfo.annotation is typed optional; every declared field has one
    **{name: (FIELDS[name].annotation, FIELDS[name]) for name in CONFIG_KEYS},  # type: ignore[call-overload]
)


class Cell(ConfigValues):
    """An extra cell outside the axes' product: an optional name and the config values it sets."""

    name: str | None = Field(None, description="the cell's name (default: its key=value pairs)")

    @model_validator(mode="after")
    def _has_a_config_key(self) -> Cell:
        if not self.model_fields_set - {"name"}:
            raise ValueError(
                "a cell needs at least one config key (a cell equal to `base` alone is written "
                "`cells: [{name: ..., <key>: <base value>}]`)"
            )
        return self


def _value_axis(key: str) -> Any:
    """A config key's axis: a list of distinct values of the key's type, or the name of a preset list."""
    presets = axis_presets(key)
    expected = f"expected a list of values or a preset name (presets: {', '.join(presets) or 'none for this key'})"

    def preset(name: str) -> list:
        if name not in presets:
            raise ValueError(expected)
        return list(presets[name])

    def shape(value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, Mapping):
            raise ValueError(
                f"{key!r} is a trial config key, so this axis takes a list of values; a named axis (variant "
                f"name -> config values) needs a name that is not a config key, e.g. '{key}_choice'"
            )
        if isinstance(value, list) and not value:
            raise ValueError("empty axis: give at least one value (or remove the axis)")
        if not isinstance(value, (list, str)):
            raise ValueError(expected)
        return value

    # Built per key at import, so typed Any: mypy checks declared types, pydantic these.
    values: Any = Annotated[list[_field_type(key)], AfterValidator(lambda v: _distinct(v, "value"))]  # type: ignore[misc]
    choice: Any = Annotated[
        Annotated[values, Tag("<values>")] | Annotated[str, AfterValidator(preset), Tag("<preset>")],
        Discriminator(lambda v: "<preset>" if isinstance(v, str) else "<values>"),
    ]
    return (Annotated[choice | None, BeforeValidator(shape)], Field(None, description=FIELDS[key].description))


def _named_axis_input(value: Any) -> Any:
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("empty axis: give at least one variant (name: {config key: value})")
        return {name: {} if overrides is None else overrides for name, overrides in value.items()}
    return value


NamedAxis = Annotated[dict[str, ConfigValues], BeforeValidator(_named_axis_input)]


class _AxesBase(BaseModel):
    """A config key with a list of values (or a preset), or a named axis: variant name -> the config values it
    sets together. The cells are the cartesian product; in a profile, `axis: null` removes an axis."""

    model_config = ConfigDict(**{**MODEL_CONFIG, "extra": "allow"})
    __pydantic_extra__: dict[str, NamedAxis | None]


Axes = create_model("Axes", __base__=_AxesBase, **{key: _value_axis(key) for key in CONFIG_KEYS})


# ------------------------------------------------------------------ the grid
class Resources(_Strict):
    """What one Ray trial (one pack) asks for."""

    cpu: Number = Field(1, gt=0, description="CPUs per pack (its torch and environment threads)")
    gpu: Annotated[Number, AfterValidator(_gpu_share)] = Field(
        0, ge=0, description="GPUs per pack: a fraction (0.25: four packs share a GPU) or a whole number"
    )


class Wandb(_Strict):
    """W&B settings of the sweep's runs (a view of the store, never the only copy)."""

    project: str | None = None
    entity: str | None = None
    tags: list[str] = Field(default_factory=list)
    mode: WandbMode | None = Field(None, description="default: offline")


PositiveInt = Annotated[Int, Field(ge=1)]


class GridLevel(_Strict):
    """The keys a grid's top level and each of its profiles may set (sweeps/README.md)."""

    description: str = Field("", description="printed by dry runs")
    base: ConfigValues = Field(default_factory=ConfigValues, description="trial config keys applied to every trial")
    frames: (
        Annotated[
            Annotated[PositiveInt, Tag("<frames>")]
            | Annotated[dict[str, PositiveInt], AfterValidator(_frames_keys), Tag("<per task>")],
            Discriminator(lambda v: "<per task>" if isinstance(v, Mapping) else "<frames>"),
        ]
        | None
    ) = Field(None, description="num_frames; or per task / task group: {easy: 5100000, medium: 10100000}")
    axes: Axes = Field(default_factory=Axes, description="the cartesian product of these gives the cells")
    cells: list[Cell] = Field(default_factory=list, description="extra cells outside the product")
    tasks: (
        Annotated[
            list[TaskName],
            BeforeValidator(_tasks_input, json_schema_input_type=str | list[str]),
            AfterValidator(lambda v: _distinct(v, "task")),
        ]
        | None
    ) = Field(None, description=f"task names, or a preset: {', '.join(TASK_PRESETS)}")
    seeds: (
        Annotated[
            list[Annotated[Int, Field(ge=0)]],
            BeforeValidator(_seeds_input, json_schema_input_type=int | list[int]),
            AfterValidator(lambda v: _distinct(v, "seed")),
        ]
        | None
    ) = Field(None, description="seeds, or a count N meaning seeds 1..N")
    resources: Resources = Field(default_factory=Resources)
    pack: Annotated[int, BeforeValidator(_pack_input), Field(ge=1)] = Field(
        DEFAULT_PACK, description="the most trials one pack trains together in one process (1 = no packing)"
    )
    max_concurrent: PositiveInt | None = Field(None, description="at most this many packs at once")
    max_failures: Annotated[Int, Field(ge=0)] = Field(
        DEFAULT_MAX_FAILURES, description="retries of a crashed trial, from its checkpoint"
    )
    ray_checkpoints: bool = Field(True, description="also hand each worker checkpoint to Ray")
    wandb: Wandb = Field(default_factory=Wandb)


class Profile(GridLevel):
    """A profile: the keys of a level, over a shared profile file it may extend."""

    extends: str | None = Field(
        None,
        description="a shared profile this one starts from, overriding what it sets: a name in sweeps/profiles/ "
        "(paper) or a path to a YAML file, relative to the grid file",
    )


# What a grid may name: the figure functions and the claims the analysis has, by the names they are registered under.
FigureName: Any = Literal.__getitem__(tuple(FIGURES))
ClaimId: Any = Literal.__getitem__(tuple(claim.id for claim in CLAIMS))


class GridFile(GridLevel):
    """A grid file: the keys of a level, a name, what it shows, and profiles (partial grids chosen with --profile)."""

    model_config = ConfigDict(**{**MODEL_CONFIG, "title": "bnsweep grid"})
    name: Annotated[str, AfterValidator(_grid_name)] | None = Field(None, description="default: the file name")
    figures: Annotated[list[FigureName], AfterValidator(lambda v: _distinct(v, "figure"))] = Field(
        default_factory=list,
        description="the figures `make figures` draws for this grid, in this order (default: curves)",
    )
    claims: Annotated[list[ClaimId], AfterValidator(lambda v: _distinct(v, "claim"))] = Field(
        default_factory=list, description="ids of the claims (analysis/claims.py) the claims table judges on this grid"
    )
    profiles: dict[str, Profile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_empty_axis(self) -> GridFile:
        for axis, values in self.axes.model_dump(exclude_unset=True).items():
            if values is None:  # in a profile, null removes an axis; at the top level it is an empty axis
                raise At("empty axis: give at least one value (or remove the axis)", f"axes.{axis}")
        return self


TOP_KEYS = tuple(GridFile.model_fields)
PROFILE_KEYS = tuple(Profile.model_fields)
SHARED_PROFILE_KEYS = tuple(GridLevel.model_fields)
RESOURCE_KEYS = tuple(Resources.model_fields)
WANDB_KEYS = tuple(Wandb.model_fields)


# ------------------------------------------------------------------ messages
def _unknown_key(loc: tuple[str | int, ...], shared_profile: bool) -> str:
    """The message for an unknown key at ``loc``: what is allowed where it stands, and the closest names."""
    inner = loc[2:] if loc[:1] == ("profiles",) else loc
    key, parent = str(loc[-1]), inner[:-1]
    if parent[:1] in (("base",), ("cells",), ("axes",)):
        if key in MANAGED_KEYS:
            return f"{key!r} is set by the grid key `{MANAGED_KEYS[key]}`, not as a config value"
        hint = did_you_mean(key, CONFIG_KEYS, DESCRIPTIONS)
        return f"unknown trial config key {key!r}{hint}; all keys: `bnsweep train --help`"
    nested: dict[tuple[str | int, ...], tuple[str, ...]] = {("resources",): RESOURCE_KEYS, ("wandb",): WANDB_KEYS}
    allowed = nested.get(parent)
    if allowed:
        return f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"
    if shared_profile:
        where, allowed = "a shared profile", SHARED_PROFILE_KEYS
    else:
        where, allowed = ("a profile", PROFILE_KEYS) if loc[:1] == ("profiles",) else ("a grid", TOP_KEYS)
    extra = " (trial config keys go under `base`)" if key in FIELDS else ""
    return f"unknown key {key!r}{did_you_mean(key, allowed)}{extra}; allowed in {where}: {', '.join(allowed)}"


def _not_an_axis(axis: str) -> str:
    if axis in MANAGED_KEYS:
        return f"{axis!r} is set by the grid key `{MANAGED_KEYS[axis]}`, not as an axis"
    return (
        f"{axis!r} is not a trial config key{did_you_mean(axis, CONFIG_KEYS, DESCRIPTIONS)}; an axis is either a "
        "config key with a list of values, or a named axis mapping variant names to config values"
    )


_BOUNDS = model_bounds(TrialFields)


def grid_messages(err: ValidationError, shared_profile: bool = False) -> list[str]:
    """``key.path: value: what is allowed`` per problem (the caller adds the file); config values as key=value.

    ``shared_profile``: the errors are of a shared profile file (``validate_shared_profile``), not of a grid."""
    messages: list[str] = []
    for error in err.errors():
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("<")))
        axes_at = loc.index("axes") if "axes" in loc else -1
        if error["type"] == "extra_forbidden":
            text, at = _unknown_key(loc, shared_profile), ""
        elif axes_at >= 0 and len(loc) == axes_at + 2 and loc[-1] not in CONFIG_KEYS and error["type"] == "dict_type":
            text, at = _not_an_axis(str(loc[-1])), ""  # a list under a name that is no config key
        else:
            text, at = error_text(error, _BOUNDS)
            leaf = next((part for part in reversed(loc) if isinstance(part, str)), "")
            value = error["input"]
            if not at and not text.startswith(("empty", "'")) and not isinstance(value, Mapping):
                shown = f"{leaf}={value!r}" if leaf in FIELDS else repr(value)
                text = f"{shown}: {text}"
        path = (key_path(loc) + at).lstrip(".")
        message = f"{path}: {text}" if path else text
        if message not in messages:
            messages.append(message)
    return messages


def validate_grid(data: Mapping[str, Any]) -> GridFile:
    """The grid file's data as a typed ``GridFile``; raises ``ValidationError`` (see ``grid_messages``)."""
    return GridFile.model_validate(data)


def validate_shared_profile(data: Mapping[str, Any]) -> GridLevel:
    """A shared profile file's data (what a profile's ``extends`` names) as a typed level; raises ``ValidationError``
    (``grid_messages(err, shared_profile=True)``)."""
    return GridLevel.model_validate(data)


def json_schema() -> dict[str, Any]:
    schema = standard_bounds(GridFile.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$comment"] = "generated by `python -m orchestrator.grid_schema` from orchestrator/grid_schema.py"
    return schema


SCHEMA_FILE = Path(__file__).resolve().parent.parent / "sweeps" / "grid.schema.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the grid format's JSON Schema, or with ``--write`` refresh sweeps/grid.schema.json."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args == ["--write"]:
        SCHEMA_FILE.write_text(text)
        print(f"wrote {SCHEMA_FILE}")
    elif not args:
        sys.stdout.write(text)
    else:
        print("usage: python -m orchestrator.grid_schema [--write]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
