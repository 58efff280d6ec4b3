"""The one typed trial configuration, declared once as a pydantic model (issue #12).

Resolution order for a trial: field defaults -> the task group's preset (method.md §1, only when ``use_task_presets``)
-> the caller's overrides. The model's declaration gives each key its coercion from YAML and command-line text,
its range and allowed values, its ``--help`` line and its JSON Schema (the grid format's ``base`` and cells use
it); the cross-key rules below are the worker's. Every error names the key, the value and what is allowed, before
any environment or network is built.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, Field, ValidationError, WithJsonSchema, model_validator

from contract.modes import (
    BATCH_STAT_NORMS,
    DEFAULT_BN_MODE,
    STEP_NAMES,
    CriticIStats,
    EncoderBnPasses,
    QBiasBnStats,
    step_is_train,
    validate_bn_mode,
)
from contract.schedules import parse_schedule
from contract.schema import (
    MODEL_CONFIG,
    Float,
    Int,
    Nullable,
    allowed_text,
    did_you_mean,
    error_text,
    is_null,
    model_bounds,
)
from contract.store import (  # noqa: F401 - the store owns the ids; these names are the config's interface too
    ID_NEUTRAL_DEFAULTS,
    ID_NEUTRAL_WHEN,
    PLACEMENT_KEYS,
    cell_id,
    config_digest,
    identity_config,
    trial_id,
    uses_batch_renorm,
)
from contract.tasks import check_task_name, is_gym_task

Norm = Literal["none", "layer_norm", "batch_norm", "batch_renorm"]
EncoderNorm = Literal["none", "batch_norm", "batch_renorm"]
ObsType = Literal["pixels", "states"]
Precision = Literal["fp32", "tf32", "bf16"]
Optimizer = Literal["adam", "sgd"]
TargetBnStats = Literal["independent", "copy", "soft", "recalibrate"]
# soft: DrQ-v2's Polyak-averaged target critic; none: CrossQ's (Bhatt et al., ICLR 2024) critic without one.
CriticTarget = Literal["soft", "none"]
TaskPresets = Literal["drqv2", "ma_bn"]
# How the replay stores pixel frames (agent/replay.py): raw, or lz4-compressed (issue #9).
FrameCodec = Literal["none", "lz4"]
NORMS: tuple[str, ...] = get_args(Norm)
ENCODER_NORMS: tuple[str, ...] = get_args(EncoderNorm)
OBS_TYPES: tuple[str, ...] = get_args(ObsType)
PRECISIONS: tuple[str, ...] = get_args(Precision)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
TARGET_BN_STATS: tuple[str, ...] = get_args(TargetBnStats)
CRITIC_TARGETS: tuple[str, ...] = get_args(CriticTarget)
TASK_PRESETS: tuple[str, ...] = get_args(TaskPresets)
FRAME_CODECS: tuple[str, ...] = get_args(FrameCodec)
# What members of one pack may differ in (issue #9): everything else fixes tensor shapes or the
# loop's schedule, so members must share it.
PACK_MEMBER_KEYS = (
    "seed",
    "bn_mode",
    "critic_i_stats",
    "lr",
    "actor_lr",
    "critic_lr",
    "target_bn_stats",
    "sgd_momentum",
)
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
MAX_BUFFER_MIX_RATIO = 4.0


EVAL_SEED_OFFSET = 100_000  # the evaluation environment's seed is the trial's seed + this (agent/train.py)
MAX_SEED = 2**32 - 1 - EVAL_SEED_OFFSET  # numpy's and dm_control's seeds are 32-bit unsigned


class ConfigError(ValueError):
    """A trial config that cannot run; the message names key, value and what is allowed."""


def _known_task(task: str) -> str:
    check_task_name(task)
    return task


def _device(device: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", device):
        raise ValueError("allowed: cpu, cuda, cuda:N")
    return device


def _schedule(text: str) -> str:
    parse_schedule(text)
    return text


TaskName = Annotated[str, AfterValidator(_known_task)]
# The JSON Schema of a check written as a function (editors see the pattern; the function words the message).
Device = Annotated[
    str, AfterValidator(_device), WithJsonSchema({"type": "string", "pattern": r"^(cpu|cuda(:\d+)?|mps)$"})
]
Schedule = Annotated[str, AfterValidator(_schedule)]
BnMode = Annotated[
    str, AfterValidator(validate_bn_mode), WithJsonSchema({"type": "string", "pattern": f"^[TE]{{{len(STEP_NAMES)}}}$"})
]
OptionalBnMode = Annotated[BnMode | None, Nullable]
OptionalRate = Annotated[Annotated[float, Field(gt=0)] | None, Nullable]


class TrialFields(BaseModel):
    """Every trial config key, each on its own: types, ranges, allowed values, defaults and help.

    Validating a partial mapping against it checks the given keys alone (``model_fields_set`` says which were
    given); ``TrialConfig`` adds the presets' resolution and the rules that tie keys together.
    """

    model_config = MODEL_CONFIG

    task: TaskName = Field(
        "hopper_hop",
        description="dm_control `domain_task` (e.g. cartpole_swingup) or Gymnasium MuJoCo id (e.g. Hopper-v5)",
    )
    obs_type: ObsType = Field("pixels", description="observation type")
    num_frames: Int = Field(
        3_100_000, ge=1, description="environment frames to train for (action repeat included); the task preset sets it"
    )
    seed: Int = Field(
        1,
        ge=0,
        le=MAX_SEED,
        description=f"seed for torch, numpy, replay sampling and the environment (0 to {MAX_SEED}; the evaluation "
        f"environment uses seed + {EVAL_SEED_OFFSET:,}, and numpy seeds are below 2**32)",
    )
    device: Device = Field("cpu", description="torch device: cpu, cuda or cuda:N")
    torch_threads: Int = Field(
        0,
        ge=0,
        description="torch intra-op threads; 0 leaves torch's default (the orchestrator sets it to the trial's CPUs)",
    )
    use_task_presets: bool = Field(
        True,
        description=(
            "apply the DrQ-v2 task-group preset (frames, std schedule, walker n-step/batch, ...) before overrides"
        ),
    )
    task_presets: TaskPresets = Field(
        "drqv2",
        description=(
            "the task-group frame budgets and std schedules: drqv2 (DrQ-v2's cfgs/task: easy 1.1M frames, std over "
            "100k agent steps; medium 3.1M, 500k; hard 30.1M, 2M) or ma_bn (the MA-BN authors' cfgs/task: easy 5.1M, "
            "100k; medium and hard 10.1M, 1M, their `medhard`); per-task keys (walker, quadruped_run, humanoid) are "
            "DrQ-v2's under both"
        ),
    )
    # --- normalization (method.md §2-5) ---
    actor_norm: Norm = Field(
        "batch_norm",
        description="normalization after each hidden Linear of the actor MLP (batch_renorm: Batch Renormalization)",
    )
    critic_norm: Norm = Field(
        "batch_norm",
        description="normalization after each hidden Linear of each Q head (batch_renorm: Batch Renormalization)",
    )
    encoder_norm: EncoderNorm = Field(
        "none",
        description=(
            "normalization after each convolution of the pixel encoder, before its ReLU (batch_norm: the authors' "
            "EncoderBN; batch_renorm: Batch Renormalization)"
        ),
    )
    encoder_bn_passes: EncoderBnPasses = Field(
        "train",
        description=(
            "mode of the encoder's BN in the update's two passes: train (the authors' code: batch statistics in both,"
            " whatever bn_mode) or by_step (the pass on s in Critic-II's mode, the pass on s' in Critic-III's); "
            "acting and evaluation use running statistics"
        ),
    )
    bn_mode: OptionalBnMode = Field(
        None,
        description=(
            "5 letters T/E for " + ", ".join(STEP_NAMES) + f"; defaults to {DEFAULT_BN_MODE} (MA-BN) when a BN layer "
            "follows it (actor or critic batch_norm; the encoder's under encoder_bn_passes=by_step), must be absent "
            "otherwise"
        ),
    )
    bn_momentum: Float = Field(0.1, ge=0.0, le=1.0, description="BatchNorm momentum (PyTorch convention)")
    bn_eps: Float = Field(1e-05, gt=0, description="BatchNorm epsilon")
    renorm_r_max: Float = Field(
        3.0,
        ge=1.0,
        description="Batch Renormalization: the bound r_max on r = sigma_batch / sigma_running after the warm-up",
    )
    renorm_d_max: Float = Field(
        5.0,
        ge=0.0,
        description=(
            "Batch Renormalization: the bound d_max on d = (mu_batch - mu_running) / sigma_running after the warm-up"
        ),
    )
    renorm_warmup_steps: Int = Field(
        100_000,
        ge=0,
        description=(
            "Batch Renormalization: agent steps over which r_max rises linearly from 1 and d_max from 0 to "
            "renorm_r_max and renorm_d_max (at step 0 the layer is BatchNorm; 0: the bounds from the start)"
        ),
    )
    buffer_mix_ratio: Float = Field(
        0.0,
        ge=0,
        le=MAX_BUFFER_MIX_RATIO,
        description="rho in [0, 4]: floor(rho*B) replay (s, a) rows join the Critic-I forward (method.md §4)",
    )
    allow_mix_in_eval_mode: bool = Field(
        False,
        description="permit buffer_mix_ratio > 0 with Critic-I in eval mode (a control; mixing then changes nothing)",
    )
    critic_i_stats: CriticIStats = Field(
        "mode",
        description=(
            "where a Critic-I = T member's critic BN layers take the statistics that normalize (s, pi(s)): mode (the "
            "forward's own batch statistics, gradient through them), batch_stopgrad (the same, gradient stopped "
            "through mean and variance), replay_batch (those of the update's replay pairs (s, a), Critic-II's "
            "batch, at Critic-I's weights) or running_noisy (the running statistics plus the batch statistics' "
            "sampling noise, from the difference of the batch's two halves, no gradient); method.md §3"
        ),
    )
    target_bn_stats: TargetBnStats = Field(
        "independent",
        description=(
            "how the target critic's BN running statistics follow the online ones: independent (its own T forwards"
            " only), copy, soft (at rate critic_target_tau) or recalibrate (after each target update, the batch "
            "statistics of the target critic's own forward on the update's (s', a') at its new weights); method.md §5"
        ),
    )
    critic_target: CriticTarget = Field(
        "soft",
        description=(
            "soft (a target critic Polyak-averaged at rate critic_target_tau gives the TD target) or none (CrossQ: "
            "no target network; (s, a) and (s', a') through the online critic in one joint forward in Critic-II's "
            "mode, the TD target from its second half, detached); method.md §5"
        ),
    )
    # --- optimization (method.md §6) ---
    optimizer: Optimizer = Field("adam", description="optimizer for all networks")
    lr: Float = Field(1e-4, gt=0, description="learning rate for all networks")
    actor_lr: OptionalRate = Field(None, description="actor learning rate (default: lr)")
    critic_lr: OptionalRate = Field(None, description="critic and encoder learning rate (default: lr)")
    sgd_momentum: Float = Field(0.0, ge=0, description="SGD momentum (only with optimizer=sgd)")
    # --- DrQ-v2 hyper-parameters (method.md §1) ---
    batch_size: Int = Field(256, ge=1, description="replay batch size B")
    nstep: Int = Field(3, ge=1, description="n of the n-step TD target")
    discount: Float = Field(0.99, ge=0.0, le=1.0, description="discount gamma per agent step")
    hidden_dim: Int = Field(1024, ge=1, description="width of the actor and Q-head MLPs")
    feature_dim: Int = Field(50, ge=1, description="trunk output width")
    critic_target_tau: Float = Field(0.01, ge=0.0, le=1.0, description="soft target update rate tau")
    update_every_steps: Int = Field(2, ge=1, description="agent steps between updates")
    num_seed_frames: Int = Field(4000, ge=0, description="frames of uniform-random actions before updates")
    num_expl_steps: Int = Field(2000, ge=0, description="agent steps of uniform-random exploration in act()")
    stddev_schedule: Schedule = Field(
        "linear(1.0,0.1,500000)", description="actor std: a constant or linear(init,final,agent_steps)"
    )
    stddev_clip: Float = Field(0.3, ge=0, description="noise clip for target actions")
    action_repeat: Int = Field(2, ge=1, description="physics steps per agent step")
    frame_stack: Int = Field(3, ge=1, description="stacked frames per pixel observation")
    replay_capacity: Int = Field(1_000_000, ge=1, description="replay capacity in transitions")
    eval_every_frames: Int = Field(10_000, ge=0, description="frames between evaluations (0: never)")
    num_eval_episodes: Int = Field(10, ge=0, description="deterministic episodes per evaluation")
    # --- metrics, logging, checkpoints (method.md §7) ---
    log_every_frames: Int = Field(5000, ge=1, description="frames between training log rows")
    q_bias_max_states: Int = Field(
        1000,
        ge=1,
        description="states per Q-bias measurement (the first N of its episodes; the authors use all of 20 episodes)",
    )
    q_bias_bn_stats: QBiasBnStats = Field(
        "update",
        description=(
            "BN statistics of a Critic-I = T member in the Q-bias pass: update (those the latest update's Critic-I "
            "forward computed, the authors' cal_est_bias) or eval_batch (the evaluated states' own); Critic-I = E "
            "uses running statistics under both"
        ),
    )
    q_bias_every_frames: Int = Field(
        0,
        ge=0,
        description=(
            "0: measure Q-bias at each evaluation, on its episodes; N > 0: a measurement of its own every N frames "
            "(the authors: 2000, every 1000 agent steps) on q_bias_episodes deterministic episodes, each evaluation "
            "row reporting the mean over the measurements since the previous row (as the authors average)"
        ),
    )
    q_bias_episodes: Int = Field(
        20,
        ge=1,
        description=(
            "deterministic episodes per measurement when q_bias_every_frames > 0 (the authors: 20); fewer run when "
            "q_bias_max_states is reached first"
        ),
    )
    q_bias_augment: bool = Field(
        False,
        description=(
            "random-shift the pixel observations of the Q-bias pass (pad 4, as in the update; the authors do), from a"
            " stream of its own so training draws the same numbers"
        ),
    )
    coverage_cell_size: Float = Field(0.5, gt=0, description="cell width h of coverage/cells")
    coverage_dims: Int = Field(4, ge=1, description="random-projection dimensions of coverage/cells")
    checkpoint_every_frames: Int = Field(
        100_000, ge=0, description="frames between checkpoints, written at the next episode end (0: none)"
    )
    checkpoint_replay: bool = Field(
        True, description="include the replay buffer in checkpoints, so a resumed trial continues exactly"
    )
    keep_replay: bool = Field(
        False,
        description="keep the replay in a finished trial's checkpoint (default: dropped when the trial finishes; "
        "weights, statistics and counters stay); placement: never part of the trial id",
    )
    # --- speed (same learning semantics) ---
    channels_last: bool = Field(True, description="run the conv encoder in channels_last memory format")
    frame_codec: FrameCodec = Field(
        "none",
        description=(
            "how the replay keeps pixel frames: none (raw), or lz4 (lossless, delta to the previous frame; same "
            "batches, a fraction of the memory)"
        ),
    )
    env_threads: Int = Field(
        1,
        ge=1,
        description=(
            "threads that step a pack's environments and sample its replays in parallel (GPU boxes: the pack's CPUs)"
        ),
    )
    member_processes: bool = Field(
        False,
        description=(
            "run each pack member's environments and replay in a worker process of its own, overlapping their "
            "steps with the update (GPU boxes; the learning is the same)"
        ),
    )
    precision: Precision = Field(
        "fp32",
        description=(
            "learner arithmetic: fp32 (PyTorch's CUDA default, pinned: cuDNN convolutions in TF32, matmuls in fp32); "
            "tf32 (matmuls in TF32 too); bf16 (update forward passes under bfloat16 autocast). Not measured harmless "
            "for learning: keep fp32 for results"
        ),
    )


class TrialConfig(TrialFields):
    """A resolved trial config: every key set, the cross-key rules checked."""

    @model_validator(mode="before")
    @classmethod
    def _default_bn_mode(cls, data: Any) -> Any:
        """A BN network without a mode string trains as MA-BN (``DEFAULT_BN_MODE``); without BN none is implied."""
        if isinstance(data, Mapping) and is_null(data.get("bn_mode")):
            if mode_string_applies({**FIELD_DEFAULTS, **data}):
                return {**data, "bn_mode": DEFAULT_BN_MODE}
        return data

    @model_validator(mode="after")
    def _cross_key_rules(self) -> TrialConfig:
        problem = cross_key_problem(self)
        if problem:
            raise ValueError(problem)
        return self

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
        return self.model_dump()


FIELDS = TrialFields.model_fields
# Batch Renormalization's settings (method.md §2): used only where some network has batch_renorm.
RENORM_KEYS = ("renorm_r_max", "renorm_d_max", "renorm_warmup_steps")
FIELD_DEFAULTS: dict[str, Any] = {name: info.default for name, info in FIELDS.items()}
DESCRIPTIONS: dict[str, str] = {name: info.description or "" for name, info in FIELDS.items()}


def field_allowed(name: str) -> tuple[str, ...] | None:
    """The allowed values of a key with a fixed set (its Literal type), else None."""
    annotation = FIELDS[name].annotation
    return tuple(get_args(annotation)) if getattr(annotation, "__origin__", None) is Literal else None


def cross_key_problem(c: TrialConfig) -> str | None:
    """The first rule tying keys together that ``c`` breaks, as a message; None when it breaks none."""
    bn_kinds = " or ".join(BATCH_STAT_NORMS)
    if c.bn_mode is not None and not c.uses_batch_norm:
        return (
            f"bn_mode={c.bn_mode!r}: a BN mode needs actor_norm or critic_norm = {bn_kinds}, or "
            f"encoder_norm={bn_kinds} with encoder_bn_passes=by_step (got actor_norm={c.actor_norm}, "
            f"critic_norm={c.critic_norm}, encoder_norm={c.encoder_norm}, encoder_bn_passes="
            f"{c.encoder_bn_passes}); leave bn_mode absent"
        )
    key_problem = _critic_i_stats_problem(c) or _critic_target_problem(c)
    if key_problem:
        return key_problem
    if c.buffer_mix_ratio > 0:
        if c.critic_norm not in BATCH_STAT_NORMS:
            return (
                f"buffer_mix_ratio={c.buffer_mix_ratio}: mixing only acts on batch statistics, "
                f"so it needs critic_norm={bn_kinds} (got {c.critic_norm})"
            )
        if not step_is_train(c.resolved_bn_mode, "critic_i") and not c.allow_mix_in_eval_mode:
            return (
                f"buffer_mix_ratio={c.buffer_mix_ratio} with bn_mode={c.resolved_bn_mode} "
                "(Critic-I = E): mixing changes nothing in eval mode; set Critic-I to T, "
                "buffer_mix_ratio=0, or allow_mix_in_eval_mode=true for a control run"
            )
    renorm_set = [key for key in RENORM_KEYS if getattr(c, key) != FIELD_DEFAULTS[key]]
    rules = [
        (
            bool(renorm_set) and not uses_batch_renorm(c.to_dict()),
            f"{', '.join(f'{key}={getattr(c, key)!r}' for key in renorm_set)}: Batch Renormalization settings, so "
            "they need actor_norm, critic_norm or encoder_norm = batch_renorm; leave them at their defaults",
        ),
        (
            c.frame_codec != "none" and c.obs_type != "pixels",
            f"frame_codec={c.frame_codec!r}: compresses pixel frames only; use none with obs_type={c.obs_type}",
        ),
        (
            c.encoder_norm != "none" and c.obs_type != "pixels",
            f"encoder_norm={c.encoder_norm!r}: only a pixel agent has an encoder; use encoder_norm=none "
            f"with obs_type={c.obs_type}",
        ),
        (
            c.encoder_bn_passes != "train" and c.encoder_norm not in BATCH_STAT_NORMS,
            f"encoder_bn_passes={c.encoder_bn_passes!r}: sets the mode of the encoder's BatchNorm, so "
            f"it needs encoder_norm={bn_kinds} (got {c.encoder_norm}); leave it at train",
        ),
        (
            bool(c.q_bias_every_frames) and not c.eval_every_frames,
            f"q_bias_every_frames={c.q_bias_every_frames}: its measurements are reported in the "
            "evaluation rows, so it needs eval_every_frames > 0 (got 0)",
        ),
        (
            c.q_bias_augment and c.obs_type != "pixels",
            "q_bias_augment=true: random shifts apply to pixel observations only; use false with "
            f"obs_type={c.obs_type}",
        ),
        (
            c.precision == "tf32" and not c.device.startswith("cuda"),
            f"precision=tf32 is a CUDA setting (device={c.device}); use fp32 or bf16",
        ),
        (
            c.sgd_momentum > 0 and c.optimizer != "sgd",
            f"sgd_momentum={c.sgd_momentum}: only used with optimizer=sgd (got {c.optimizer})",
        ),
        (
            c.obs_type == "states" and c.frame_stack != 1 and not c.is_dmc,
            f"frame_stack={c.frame_stack}: Gymnasium state observations are not stacked; use 1",
        ),
    ]
    return next((message for broken, message in rules if broken), None)


def _critic_i_stats_problem(c: TrialConfig) -> str | None:
    """Why ``c.critic_i_stats`` cannot apply to ``c``, or None: it chooses among batch statistics of the critic's
    BN layers in Critic-I, so it needs them there, and mixing rows join only the forward's own statistics (whose
    two halves running_noisy needs alike)."""
    if c.critic_i_stats == "mode":
        return None
    given = f"critic_i_stats={c.critic_i_stats!r}"
    if c.critic_norm not in BATCH_STAT_NORMS:
        return (
            f"{given}: chooses the statistics of the critic's BN layers, so it needs critic_norm="
            f"{' or '.join(BATCH_STAT_NORMS)} (got {c.critic_norm}); use critic_i_stats=mode"
        )
    if not step_is_train(c.resolved_bn_mode, "critic_i"):
        return (
            f"{given} with bn_mode={c.resolved_bn_mode} (Critic-I = E): Critic-I normalizes with running "
            "statistics, and this key chooses among batch statistics; set Critic-I to T or use critic_i_stats=mode"
        )
    if c.critic_i_stats in ("replay_batch", "running_noisy") and c.buffer_mix_ratio > 0:
        return (
            f"{given} with buffer_mix_ratio={c.buffer_mix_ratio}: mixing rows shape only the forward's own "
            f"batch statistics, which {c.critic_i_stats} does not normalize with; use buffer_mix_ratio=0 or "
            "critic_i_stats=mode or batch_stopgrad"
        )
    if c.critic_i_stats == "running_noisy" and c.batch_size < 4:
        return (
            f"{given} with batch_size={c.batch_size}: the noise comes from the batch's two halves, each needing "
            "two rows for a variance; use batch_size >= 4"
        )
    return None


def _critic_target_problem(c: TrialConfig) -> str | None:
    """Why ``c`` sets what ``critic_target=none`` leaves without meaning, or None: without a target network there
    is no target update (critic_target_tau) and no target statistics (target_bn_stats), and (s', a') runs in the
    joint forward of Critic-II, so the Critic-III letter must say the same as Critic-II's."""
    if c.critic_target != "none":
        return None
    given = "critic_target='none'"
    if c.target_bn_stats != FIELD_DEFAULTS["target_bn_stats"]:
        return (
            f"{given} with target_bn_stats={c.target_bn_stats!r}: there is no target critic whose statistics could "
            f"follow the online ones; leave target_bn_stats={FIELD_DEFAULTS['target_bn_stats']}"
        )
    if c.critic_target_tau != FIELD_DEFAULTS["critic_target_tau"]:
        return (
            f"{given} with critic_target_tau={c.critic_target_tau}: there is no target network to update; leave "
            f"critic_target_tau={FIELD_DEFAULTS['critic_target_tau']}"
        )
    mode = c.resolved_bn_mode
    if c.critic_norm in BATCH_STAT_NORMS and step_is_train(mode, "critic_iii") != step_is_train(mode, "critic_ii"):
        return (
            f"{given} with bn_mode={mode}: (s', a') goes through the critic in Critic-II's joint forward, so "
            "the Critic-III letter must equal the Critic-II letter (e.g. TTETT or TTTEE)"
        )
    return None


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


TaskGroup = Literal["easy", "medium", "hard", "gym_mujoco"]
TASK_GROUPS: tuple[str, ...] = get_args(TaskGroup)


def task_group(task: str) -> TaskGroup:
    if is_gym_task(task):
        return "gym_mujoco"
    if task in EASY_TASKS:
        return "easy"
    if task.startswith("humanoid_"):
        return "hard"
    return "medium"  # DrQ-v2 runs every other DMC task with the medium settings


def task_preset(task: str, presets: str = "drqv2") -> dict[str, Any]:
    """The task-group settings (method.md §1) of ``presets`` (TASK_PRESETS); the Gymnasium values are this project's
    choice under both. Raises ConfigError for an unknown ``presets``."""
    if presets not in GROUP_BUDGETS:
        raise ConfigError(f"task_presets={presets!r}: allowed: {allowed_text(TASK_PRESETS)}")
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
_BOUNDS = model_bounds(TrialFields)


def config_messages(err: ValidationError) -> list[str]:
    """One line per problem: ``key=value: what is allowed``; unknown keys with their closest names."""
    messages = []
    for error in err.errors():
        key = next((part for part in reversed(error["loc"]) if isinstance(part, str)), "")
        if error["type"] == "extra_forbidden":
            messages.append(
                f"unknown config key {key!r}{did_you_mean(key, list(FIELDS), DESCRIPTIONS)}; "
                "run `bnsweep train --help` for all keys"
            )
            continue
        text, _ = error_text(error, _BOUNDS)
        messages.append(f"{key}={error['input']!r}: {text}" if key else text)
    return messages


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Each key of ``overrides`` on its own, coerced (``"1e-4"`` -> 1e-4); raises ConfigError naming every problem."""
    try:
        checked = TrialFields.model_validate(dict(overrides))
    except ValidationError as err:
        raise ConfigError("; ".join(config_messages(err))) from None
    return checked.model_dump(include=checked.model_fields_set)


def build_config(overrides: Mapping[str, Any] | None = None) -> TrialConfig:
    """Defaults -> task preset -> overrides, then validate. Raises ConfigError."""
    values = check_overrides(overrides or {})
    merged: dict[str, Any] = dict(FIELD_DEFAULTS)
    if values.get("use_task_presets", merged["use_task_presets"]):
        merged.update(
            task_preset(values.get("task", merged["task"]), values.get("task_presets", merged["task_presets"]))
        )
    merged.update(values)
    try:
        return TrialConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError("; ".join(config_messages(err))) from None


def mode_string_applies(config: Mapping[str, Any]) -> bool:
    """Whether some BN layer of a (resolved or stored) config follows its mode string: the actor's or critic's,
    or the encoder's under encoder_bn_passes=by_step (under train it ignores the string, as the authors' does)."""
    return any(config.get(key) in BATCH_STAT_NORMS for key in ("actor_norm", "critic_norm")) or (
        config.get("encoder_norm") in BATCH_STAT_NORMS and config.get("encoder_bn_passes") == "by_step"
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
    for name, info in FIELDS.items():
        allowed = field_allowed(name)
        allowed_line = f"  allowed: {allowed_text(allowed)}" if allowed else ""
        lines.append(f"  {name} = {info.default!r}{allowed_line}")
        lines.append(f"      {info.description or ''}")
    lines += [
        "",
        "Task-group presets (method.md §1): easy " + ", ".join(EASY_TASKS) + "; medium: every other DMC task "
        "(" + ", ".join(MEDIUM_TASKS) + "); hard: humanoid_*; Gymnasium: " + ", ".join(GYM_TASKS) + ".",
    ]
    return "\n".join(lines)
