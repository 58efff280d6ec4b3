"""The one typed trial configuration, built from plain dicts in one place.

Resolution order for a trial: dataclass defaults -> the task group's preset
(SPEC §1, only when ``use_task_presets``) -> the caller's overrides.  Every
value is type-checked and range-checked here, before any environment or
network is built, and every error names the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.bn_modes import (
    DEFAULT_BN_MODE,
    ENCODER_BN_PASSES,
    Q_BIAS_BN_STATS,
    STEP_NAMES,
    step_is_train,
    validate_bn_mode,
)
from agent.replay import FRAME_CODECS
from agent.store import (  # noqa: F401 - the store owns the ids; these names are the config's interface too
    ID_NEUTRAL_DEFAULTS,
    ID_NEUTRAL_WHEN,
    PLACEMENT_KEYS,
    cell_id,
    config_digest,
    identity_config,
    trial_id,
)
from envs import check_task_name, is_gym_task

NORMS = ("none", "layer_norm", "batch_norm")
ENCODER_NORMS = ("none", "batch_norm")
OBS_TYPES = ("pixels", "states")
# Keys that say where or how a trial runs, not what it computes (frame_codec is lossless):
# trial and cell identities leave them out.
PRECISIONS = ("fp32", "tf32", "bf16")
# What members of one pack may differ in (issue #9): everything else fixes tensor shapes or the
# loop's schedule, so members must share it.
PACK_MEMBER_KEYS = ("seed", "bn_mode", "lr", "actor_lr", "critic_lr", "target_bn_stats", "sgd_momentum")
OPTIMIZERS = ("adam", "sgd")
# (frames, exploration std schedule) per DMC task group. drqv2: DrQ-v2's cfgs/task/{easy,medium,hard}.yaml.
# ma_bn: the MA-BN authors' cfgs/task/easy.yaml and medhard.yaml (monster476/ma-bn, drqv2/cfgs/task); their
# per-task files (fish_swim, quadruped_fetch, ...) only pick medhard and set task_name, nothing else.
GROUP_BUDGETS: dict[str, dict[str, tuple[int, str]]] = {
    "drqv2": {
        "easy": (1_100_000, "linear(1.0,0.1,100000)"),
        "medium": (3_100_000, "linear(1.0,0.1,500000)"),
        "hard": (30_100_000, "linear(1.0,0.1,2000000)"),
    },
    "ma_bn": {
        "easy": (5_100_000, "linear(1.0,0.1,100000)"),
        "medium": (10_100_000, "linear(1.0,0.1,1000000)"),
        "hard": (10_100_000, "linear(1.0,0.1,1000000)"),
    },
}
TASK_PRESETS = tuple(GROUP_BUDGETS)
TARGET_BN_STATS = ("independent", "copy", "soft")
MAX_BUFFER_MIX_RATIO = 4.0


class ConfigError(ValueError):
    """A trial config that cannot run; the message names key, value and what is allowed."""


def _doc(help_text: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"help": help_text, "allowed": allowed}


@dataclass(frozen=True)
class TrialConfig:
    # --- what is trained ---
    task: str = field(
        default="hopper_hop",
        metadata=_doc("dm_control `domain_task` (e.g. cartpole_swingup) or Gymnasium MuJoCo id (e.g. Hopper-v5)"),
    )
    obs_type: str = field(default="pixels", metadata=_doc("observation type", OBS_TYPES))
    num_frames: int = field(
        default=3_100_000,
        metadata=_doc("environment frames to train for (action repeat included); the task preset sets it"),
    )
    seed: int = field(default=1, metadata=_doc("seed for torch, numpy, replay sampling and the environment"))
    device: str = field(default="cpu", metadata=_doc("torch device: cpu, cuda or cuda:N"))
    torch_threads: int = field(
        default=0,
        metadata=_doc(
            "torch intra-op threads; 0 leaves torch's default (the orchestrator sets it to the trial's CPUs)"
        ),
    )
    use_task_presets: bool = field(
        default=True,
        metadata=_doc(
            "apply the DrQ-v2 task-group preset (frames, std schedule, walker n-step/batch, ...) before overrides"
        ),
    )
    task_presets: str = field(
        default="drqv2",
        metadata=_doc(
            "the task-group frame budgets and std schedules: drqv2 (DrQ-v2's cfgs/task: easy 1.1M frames, std over "
            "100k agent steps; medium 3.1M, 500k; hard 30.1M, 2M) or ma_bn (the MA-BN authors' cfgs/task: easy 5.1M, "
            "100k; medium and hard 10.1M, 1M, their `medhard`); per-task keys (walker, quadruped_run, humanoid) are "
            "DrQ-v2's under both",
            TASK_PRESETS,
        ),
    )
    # --- normalization (SPEC §2-5) ---
    actor_norm: str = field(
        default="batch_norm", metadata=_doc("normalization after each hidden Linear of the actor MLP", NORMS)
    )
    critic_norm: str = field(
        default="batch_norm", metadata=_doc("normalization after each hidden Linear of each Q head", NORMS)
    )
    encoder_norm: str = field(
        default="none",
        metadata=_doc(
            "normalization after each convolution of the pixel encoder, before its ReLU (the authors' EncoderBN)",
            ENCODER_NORMS,
        ),
    )
    encoder_bn_passes: str = field(
        default="train",
        metadata=_doc(
            "mode of the encoder's BN in the update's two passes: train (the authors' code: batch statistics in both, "
            "whatever bn_mode) or by_step (the pass on s in Critic-II's mode, the pass on s' in Critic-III's); acting "
            "and evaluation use running statistics",
            ENCODER_BN_PASSES,
        ),
    )
    bn_mode: str | None = field(
        default=None,
        metadata=_doc(
            "5 letters T/E for " + ", ".join(STEP_NAMES) + f"; defaults to {DEFAULT_BN_MODE} (MA-BN) when "
            "a BN layer follows it (actor or critic batch_norm; the encoder's under encoder_bn_passes=by_step), "
            "must be absent otherwise"
        ),
    )
    bn_momentum: float = field(default=0.1, metadata=_doc("BatchNorm momentum (PyTorch convention)"))
    bn_eps: float = field(default=1e-5, metadata=_doc("BatchNorm epsilon"))
    buffer_mix_ratio: float = field(
        default=0.0, metadata=_doc("rho in [0, 4]: floor(rho*B) replay (s, a) rows join the Critic-I forward (SPEC §4)")
    )
    allow_mix_in_eval_mode: bool = field(
        default=False,
        metadata=_doc(
            "permit buffer_mix_ratio > 0 with Critic-I in eval mode (a control; mixing then changes nothing)"
        ),
    )
    target_bn_stats: str = field(
        default="independent",
        metadata=_doc(
            "how the target critic's BN running statistics follow the online ones (SPEC §5)", TARGET_BN_STATS
        ),
    )
    # --- optimization (SPEC §6) ---
    optimizer: str = field(default="adam", metadata=_doc("optimizer for all networks", OPTIMIZERS))
    lr: float = field(default=1e-4, metadata=_doc("learning rate for all networks"))
    actor_lr: float | None = field(default=None, metadata=_doc("actor learning rate (default: lr)"))
    critic_lr: float | None = field(default=None, metadata=_doc("critic and encoder learning rate (default: lr)"))
    sgd_momentum: float = field(default=0.0, metadata=_doc("SGD momentum (only with optimizer=sgd)"))
    # --- DrQ-v2 hyper-parameters (SPEC §1) ---
    batch_size: int = field(default=256, metadata=_doc("replay batch size B"))
    nstep: int = field(default=3, metadata=_doc("n of the n-step TD target"))
    discount: float = field(default=0.99, metadata=_doc("discount gamma per agent step"))
    hidden_dim: int = field(default=1024, metadata=_doc("width of the actor and Q-head MLPs"))
    feature_dim: int = field(default=50, metadata=_doc("trunk output width"))
    critic_target_tau: float = field(default=0.01, metadata=_doc("soft target update rate tau"))
    update_every_steps: int = field(default=2, metadata=_doc("agent steps between updates"))
    num_seed_frames: int = field(default=4000, metadata=_doc("frames of uniform-random actions before updates"))
    num_expl_steps: int = field(default=2000, metadata=_doc("agent steps of uniform-random exploration in act()"))
    stddev_schedule: str = field(
        default="linear(1.0,0.1,500000)", metadata=_doc("actor std: a constant or linear(init,final,agent_steps)")
    )
    stddev_clip: float = field(default=0.3, metadata=_doc("noise clip for target actions"))
    action_repeat: int = field(default=2, metadata=_doc("physics steps per agent step"))
    frame_stack: int = field(default=3, metadata=_doc("stacked frames per pixel observation"))
    replay_capacity: int = field(default=1_000_000, metadata=_doc("replay capacity in transitions"))
    eval_every_frames: int = field(default=10_000, metadata=_doc("frames between evaluations (0: never)"))
    num_eval_episodes: int = field(default=10, metadata=_doc("deterministic episodes per evaluation"))
    # --- metrics, logging, checkpoints (SPEC §7) ---
    log_every_frames: int = field(default=5000, metadata=_doc("frames between training log rows"))
    q_bias_max_states: int = field(
        default=1000,
        metadata=_doc(
            "states per Q-bias measurement (the first N of its episodes; the authors use all of 20 episodes)"
        ),
    )
    q_bias_bn_stats: str = field(
        default="update",
        metadata=_doc(
            "BN statistics of a Critic-I = T member in the Q-bias pass: update (those the latest update's Critic-I "
            "forward computed, the authors' cal_est_bias) or eval_batch (the evaluated states' own); Critic-I = E "
            "uses running statistics under both",
            Q_BIAS_BN_STATS,
        ),
    )
    q_bias_every_frames: int = field(
        default=0,
        metadata=_doc(
            "0: measure Q-bias at each evaluation, on its episodes; N > 0: a measurement of its own every N frames "
            "(the authors: 2000, every 1000 agent steps) on q_bias_episodes deterministic episodes, each evaluation "
            "row reporting the mean over the measurements since the previous row (as the authors average)"
        ),
    )
    q_bias_episodes: int = field(
        default=20,
        metadata=_doc(
            "deterministic episodes per measurement when q_bias_every_frames > 0 (the authors: 20); fewer run when "
            "q_bias_max_states is reached first"
        ),
    )
    q_bias_augment: bool = field(
        default=False,
        metadata=_doc(
            "random-shift the pixel observations of the Q-bias pass (pad 4, as in the update; the authors do), from "
            "a stream of its own so training draws the same numbers"
        ),
    )
    coverage_cell_size: float = field(default=0.5, metadata=_doc("cell width h of coverage/cells"))
    coverage_dims: int = field(default=4, metadata=_doc("random-projection dimensions of coverage/cells"))
    checkpoint_every_frames: int = field(
        default=100_000, metadata=_doc("frames between checkpoints, written at the next episode end (0: none)")
    )
    checkpoint_replay: bool = field(
        default=True, metadata=_doc("include the replay buffer in checkpoints, so a resumed trial continues exactly")
    )
    # --- speed (same learning semantics) ---
    channels_last: bool = field(default=True, metadata=_doc("run the conv encoder in channels_last memory format"))
    frame_codec: str = field(
        default="none",
        metadata=_doc(
            "how the replay keeps pixel frames: none (raw), or lz4 (lossless, delta to the previous frame; same "
            "batches, a fraction of the memory)",
            FRAME_CODECS,
        ),
    )
    env_threads: int = field(
        default=1,
        metadata=_doc(
            "threads that step a pack's environments and sample its replays in parallel (GPU boxes: the pack's CPUs)"
        ),
    )
    precision: str = field(
        default="fp32",
        metadata=_doc(
            "learner arithmetic: fp32; tf32 (CUDA matmuls/convolutions in TF32); bf16 (update forward passes under "
            "bfloat16 autocast). Not measured harmless for learning: keep fp32 for results",
            PRECISIONS,
        ),
    )

    @property
    def uses_batch_norm(self) -> bool:
        """Some BN layer follows the mode string (see ``mode_string_applies``)."""
        return mode_string_applies(self.to_dict())

    @property
    def resolved_bn_mode(self) -> str:
        """The mode string in force ('EEEEE' is never implied: without BN it is unused)."""
        return self.bn_mode or DEFAULT_BN_MODE

    @property
    def mix_rows(self) -> int:
        """Replay rows added to the Critic-I forward: floor(rho * B)."""
        return int(self.buffer_mix_ratio * self.batch_size)

    @property
    def replay_rows_per_update(self) -> int:
        """Rows sampled per update: B, or more when rho > 1 needs further replay rows."""
        return max(self.batch_size, self.mix_rows)

    @property
    def is_dmc(self) -> bool:
        return not is_gym_task(self.task)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- task presets
EASY_TASKS = (
    "cartpole_balance",
    "cartpole_balance_sparse",
    "cartpole_swingup",
    "cup_catch",
    "finger_spin",
    "hopper_stand",
    "pendulum_swingup",
    "walker_stand",
    "walker_walk",
)
MEDIUM_TASKS = (
    "acrobot_swingup",
    "cartpole_swingup_sparse",
    "cheetah_run",
    "finger_turn_easy",
    "finger_turn_hard",
    "hopper_hop",
    "quadruped_run",
    "quadruped_walk",
    "reacher_easy",
    "reacher_hard",
    "walker_run",
)
GYM_TASKS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5")


def task_group(task: str) -> str:
    if is_gym_task(task):
        return "gym_mujoco"
    if task in EASY_TASKS:
        return "easy"
    if task.startswith("humanoid_"):
        return "hard"
    return "medium"  # DrQ-v2 runs every other DMC task with the medium settings


def task_preset(task: str, presets: str = "drqv2") -> dict[str, Any]:
    """The task-group settings (SPEC §1) of ``presets`` (TASK_PRESETS); the Gymnasium values are this project's
    choice under both. Raises ConfigError for an unknown ``presets``."""
    if presets not in GROUP_BUDGETS:
        raise ConfigError(f"task_presets={presets!r}: allowed values are {', '.join(TASK_PRESETS)}")
    group = task_group(task)
    if group == "gym_mujoco":
        # choice: Gymnasium MuJoCo from states, no repeat/stack, medium-length schedule, 1M frames
        preset: dict[str, Any] = {
            "num_frames": 1_000_000,
            "stddev_schedule": "linear(1.0,0.1,500000)",
            "action_repeat": 1,
            "frame_stack": 1,
        }
    else:
        frames, schedule = GROUP_BUDGETS[presets][group]
        preset = {"num_frames": frames, "stddev_schedule": schedule}
    if group == "hard":
        preset.update(lr=8e-5, feature_dim=100)  # DrQ-v2's humanoid task files
    if task.startswith("walker_"):
        preset.update(nstep=1, batch_size=512)
    if task == "quadruped_run":
        preset.update(replay_capacity=100_000)
    return preset


# ---------------------------------------------------------------- building
FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
DEFAULTS = TrialConfig()


def field_allowed(name: str) -> tuple[str, ...] | None:
    return FIELDS[name].metadata.get("allowed")


def _field_types(name: str) -> tuple[type, ...]:
    hint = typing.get_type_hints(TrialConfig)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for t in typing.get_args(hint))
    return (hint,)


def coerce_value(name: str, value: Any) -> Any:
    """Turn a YAML/CLI value into the field's type, or raise ConfigError."""
    kinds = _field_types(name)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in kinds):
        if type(None) in kinds:
            return None
        raise ConfigError(f"{name}: null is not allowed (expected {_type_name(kinds)})")
    for kind in kinds:
        if kind is type(None):
            continue
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    as_float = float(value.replace("_", ""))
                except ValueError:
                    continue
                if as_float.is_integer():
                    return int(as_float)
        elif kind is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    continue
        elif kind is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)  # e.g. stddev_schedule=0.2 from YAML
    raise ConfigError(f"{name}={value!r}: expected {_type_name(kinds)}")


def _type_name(kinds: tuple[type, ...]) -> str:
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def unknown_key_error(key: str, where: str = "") -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"{where}unknown config key {key!r}{hint}; run `python -m agent.train --help` for all keys")


def build_config(overrides: Mapping[str, Any] | None = None) -> TrialConfig:
    """Defaults -> task preset -> overrides, then validate. Raises ConfigError."""
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in FIELDS:
            raise unknown_key_error(key)
    values = {key: coerce_value(key, value) for key, value in overrides.items()}
    task = values.get("task", DEFAULTS.task)
    use_presets = values.get("use_task_presets", DEFAULTS.use_task_presets)
    merged: dict[str, Any] = DEFAULTS.to_dict()
    if use_presets and isinstance(task, str):
        merged.update(task_preset(task, values.get("task_presets", DEFAULTS.task_presets)))
    merged.update(values)
    if merged["bn_mode"] is None and mode_string_applies(merged):
        merged["bn_mode"] = DEFAULT_BN_MODE
    config = TrialConfig(**merged)
    validate(config)
    return config


def validate(config: TrialConfig) -> None:
    c = config
    for name in (
        "obs_type",
        "actor_norm",
        "critic_norm",
        "encoder_norm",
        "encoder_bn_passes",
        "target_bn_stats",
        "optimizer",
        "frame_codec",
        "precision",
        "task_presets",
        "q_bias_bn_stats",
    ):
        allowed = field_allowed(name)
        if getattr(c, name) not in allowed:
            raise ConfigError(f"{name}={getattr(c, name)!r}: allowed values are {', '.join(allowed)}")
    if c.bn_mode is not None:
        if not c.uses_batch_norm:
            raise ConfigError(
                f"bn_mode={c.bn_mode!r}: a BN mode needs actor_norm or critic_norm = batch_norm, or "
                f"encoder_norm=batch_norm with encoder_bn_passes=by_step (got actor_norm={c.actor_norm}, "
                f"critic_norm={c.critic_norm}, encoder_norm={c.encoder_norm}, encoder_bn_passes="
                f"{c.encoder_bn_passes}); leave bn_mode absent"
            )
        try:
            validate_bn_mode(c.bn_mode)
        except ValueError as err:
            raise ConfigError(f"bn_mode={c.bn_mode!r}: {err}") from None
    if not 0.0 <= c.buffer_mix_ratio <= MAX_BUFFER_MIX_RATIO:
        raise ConfigError(f"buffer_mix_ratio={c.buffer_mix_ratio}: allowed range is [0, {MAX_BUFFER_MIX_RATIO}]")
    if c.buffer_mix_ratio > 0:
        if c.critic_norm != "batch_norm":
            raise ConfigError(
                f"buffer_mix_ratio={c.buffer_mix_ratio}: mixing only acts on batch statistics, "
                f"so it needs critic_norm=batch_norm (got {c.critic_norm})"
            )
        if not step_is_train(c.resolved_bn_mode, "critic_i") and not c.allow_mix_in_eval_mode:
            raise ConfigError(
                f"buffer_mix_ratio={c.buffer_mix_ratio} with bn_mode={c.resolved_bn_mode} "
                "(Critic-I = E): mixing changes nothing in eval mode; set Critic-I to T, "
                "buffer_mix_ratio=0, or allow_mix_in_eval_mode=true for a control run"
            )
    for name in ("lr", "actor_lr", "critic_lr"):
        value = getattr(c, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{name}={value}: must be > 0")
    positive_ints = (
        "num_frames",
        "batch_size",
        "nstep",
        "hidden_dim",
        "feature_dim",
        "update_every_steps",
        "action_repeat",
        "frame_stack",
        "replay_capacity",
        "log_every_frames",
        "q_bias_max_states",
        "q_bias_episodes",
        "coverage_dims",
    )
    for name in positive_ints:
        if getattr(c, name) < 1:
            raise ConfigError(f"{name}={getattr(c, name)}: must be >= 1")
    non_negative = (
        "num_seed_frames",
        "num_expl_steps",
        "eval_every_frames",
        "num_eval_episodes",
        "checkpoint_every_frames",
        "torch_threads",
        "sgd_momentum",
        "stddev_clip",
        "q_bias_every_frames",
    )
    for name in non_negative:
        if getattr(c, name) < 0:
            raise ConfigError(f"{name}={getattr(c, name)}: must be >= 0")
    for name, low, high in (("discount", 0.0, 1.0), ("critic_target_tau", 0.0, 1.0), ("bn_momentum", 0.0, 1.0)):
        if not low <= getattr(c, name) <= high:
            raise ConfigError(f"{name}={getattr(c, name)}: allowed range is [{low}, {high}]")
    if c.bn_eps <= 0 or c.coverage_cell_size <= 0:
        raise ConfigError("bn_eps and coverage_cell_size must be > 0")
    if c.frame_codec != "none" and c.obs_type != "pixels":
        raise ConfigError(
            f"frame_codec={c.frame_codec!r}: compresses pixel frames only; use none with obs_type={c.obs_type}"
        )
    if c.encoder_norm != "none" and c.obs_type != "pixels":
        raise ConfigError(
            f"encoder_norm={c.encoder_norm!r}: only a pixel agent has an encoder; use encoder_norm=none "
            f"with obs_type={c.obs_type}"
        )
    if c.encoder_bn_passes != "train" and c.encoder_norm != "batch_norm":
        raise ConfigError(
            f"encoder_bn_passes={c.encoder_bn_passes!r}: sets the mode of the encoder's BatchNorm, so "
            f"it needs encoder_norm=batch_norm (got {c.encoder_norm}); leave it at train"
        )
    if c.q_bias_every_frames and not c.eval_every_frames:
        raise ConfigError(
            f"q_bias_every_frames={c.q_bias_every_frames}: its measurements are reported in the "
            "evaluation rows, so it needs eval_every_frames > 0 (got 0)"
        )
    if c.q_bias_augment and c.obs_type != "pixels":
        raise ConfigError(
            f"q_bias_augment=true: random shifts apply to pixel observations only; use false with obs_type={c.obs_type}"
        )
    if c.env_threads < 1:
        raise ConfigError(f"env_threads={c.env_threads}: must be >= 1")
    if c.precision == "tf32" and not c.device.startswith("cuda"):
        raise ConfigError(f"precision=tf32 is a CUDA setting (device={c.device}); use fp32 or bf16")
    if c.sgd_momentum > 0 and c.optimizer != "sgd":
        raise ConfigError(f"sgd_momentum={c.sgd_momentum}: only used with optimizer=sgd (got {c.optimizer})")
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", c.device):
        raise ConfigError(f"device={c.device!r}: allowed values are cpu, cuda, cuda:N")
    if c.obs_type == "states" and c.frame_stack != 1 and not c.is_dmc:
        raise ConfigError(f"frame_stack={c.frame_stack}: Gymnasium state observations are not stacked; use 1")
    from agent.schedules import parse_schedule  # local: keeps this module free of torch at import

    try:
        parse_schedule(c.stddev_schedule)
    except ValueError as err:
        raise ConfigError(f"stddev_schedule={c.stddev_schedule!r}: {err}") from None
    try:
        check_task_name(c.task)
    except ValueError as err:
        raise ConfigError(f"task={c.task!r}: {err}") from None


def mode_string_applies(config: Mapping[str, Any]) -> bool:
    """Whether some BN layer of a (resolved or stored) config follows its mode string: the actor's or critic's,
    or the encoder's under encoder_bn_passes=by_step (under train it ignores the string, as the authors' does)."""
    return "batch_norm" in (config.get("actor_norm"), config.get("critic_norm")) or (
        config.get("encoder_norm") == "batch_norm" and config.get("encoder_bn_passes") == "by_step"
    )


def pack_signature(config: TrialConfig) -> tuple[tuple[str, Any], ...]:
    """What members of one pack must share: every key but PACK_MEMBER_KEYS (placement included)."""
    return tuple((k, v) for k, v in sorted(config.to_dict().items()) if k not in PACK_MEMBER_KEYS)


def check_packable(configs: Sequence[TrialConfig]) -> None:
    """Raise ConfigError unless ``configs`` can train as one pack (same signature, at least one member)."""
    if not configs:
        raise ConfigError("a pack needs at least one trial config")
    first = dict(pack_signature(configs[0]))
    for i, config in enumerate(configs[1:], start=1):
        other = dict(pack_signature(config))
        differing = [k for k in first if first[k] != other[k]]
        if differing:
            shown = ", ".join(f"{k}={first[k]!r} vs {other[k]!r}" for k in differing[:4])
            raise ConfigError(
                f"pack member {i} differs from member 0 in {shown}; members of a pack may differ "
                f"only in {', '.join(PACK_MEMBER_KEYS)}"
            )


def help_text() -> str:
    lines = ["Trial config keys (key=value on the command line; task presets apply before overrides):", ""]
    for f in dataclasses.fields(TrialConfig):
        allowed = f.metadata.get("allowed")
        allowed_text = f"  allowed: {', '.join(allowed)}" if allowed else ""
        lines.append(f"  {f.name} = {f.default!r}{allowed_text}")
        lines.append(f"      {f.metadata.get('help', '')}")
    lines += [
        "",
        "Task-group presets (SPEC §1): easy " + ", ".join(EASY_TASKS) + "; medium: every other DMC task "
        "(" + ", ".join(MEDIUM_TASKS) + "); hard: humanoid_*; Gymnasium: " + ", ".join(GYM_TASKS) + ".",
    ]
    return "\n".join(lines)
