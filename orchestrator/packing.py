"""Packs (issue #9): up to K trials trained together in one process, as one Ray trial.

A pack is placement, like ``resources``: it never changes a trial's id, its files
or its results, only which process computes it.  This module decides

* which pending trials share a pack (``make_packs``): equal ``pack_signature``
  (the worker's rule: members may differ only in ``PACK_MEMBER_KEYS``) and equal
  resume frame, in the grid's order, in balanced packs of at most K members;
* how much host memory a pack needs (``pack_bytes``): per member the replay
  buffer it will allocate plus a fixed overhead, plus one process;
* how fast a member of a pack of K trains (``packed_speedup``), from measured
  speed-ups only: without a measurement the estimate says so and assumes none;
* how much disk the result store needs at its peak (``store_disk_plan``): each trial's
  checkpoints (replay included) as the worker keeps them, Ray's copies, metrics.

The numbers here are documented in docs/orchestrator.md ("Packed trials").
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.replay import raw_frame_bytes, replay_slots, slot_bytes
from contract.config import FIELD_DEFAULTS, PACK_MEMBER_KEYS, TrialConfig, pack_signature
from contract.store import config_digest
from contract.tasks import task_dims
from envs.base import ObservationLayout, observation_layout, pixel_frame_shape

if TYPE_CHECKING:
    from agent.networks import ParameterCount

GiB = 1024**3

# ------------------------------------------------------------------ the configs the planner reads
PlannedConfig = TrialConfig | Mapping[str, Any]  # a TrialConfig, or its to_dict() (what a grid's TrialSpec holds)


def as_trial_config(config: PlannedConfig) -> TrialConfig:
    """``config`` as the TrialConfig it was resolved as, without validating it again (a grid's trials were validated
    when it loaded); a key it lacks takes its declared default."""
    return config if isinstance(config, TrialConfig) else TrialConfig.model_construct(**config)


def _observation(config: TrialConfig) -> tuple[ObservationLayout, int]:
    """(the observation's layout, action_dim) of a trial's task, from the task table: no environment is built."""
    dims = task_dims(config.task)
    return observation_layout(config.obs_type, dims.state_dim, config.frame_stack), dims.action_dim


# ------------------------------------------------------------------ replay memory per transition
# The worker's replay (agent/replay.py) stores each frame once (raw_frame_bytes) and per transition what slot_bytes
# counts: the action, reward and discount, episode start and end.
PIXEL_FRAME_BYTES = raw_frame_bytes("pixels", pixel_frame_shape())  # 21,168 B (21,196 B per transition at action_dim 1)
# Bytes of one stored pixel frame with `frame_codec: lz4` (agent/replay.py: lz4 of the difference to the
# previous frame, keyframes every 16 steps).  Measured by `python -m bench.replay_codec` on the 2-core dev
# machine, 2026-11-26 (random-policy frames, 10,000 transitions in an 8,000-slot ring, frame bytes per
# transition: cartpole_swingup 1,288, walker_walk 7,046, cheetah_run 3,560, hopper_hop 2,827, quadruped_run
# 8,287), times COMPRESSED_MARGIN: a trained policy moves the tracking camera more than a random one, which
# makes differences larger, and that has not been measured.  Other tasks: half a raw frame, unmeasured.
COMPRESSED_MARGIN = 1.5
COMPRESSED_PIXEL_BYTES_MEASURED = {
    "cartpole_swingup": 1_288,
    "walker_walk": 7_046,
    "cheetah_run": 3_560,
    "hopper_hop": 2_827,
    "quadruped_run": 8_287,
}
COMPRESSED_PIXEL_BYTES_UNMEASURED = PIXEL_FRAME_BYTES // 2


def compressed_pixel_bytes(task: str) -> int:
    """Planned bytes of one lz4-stored frame of ``task`` (measured with a margin, or half a raw frame)."""
    measured = COMPRESSED_PIXEL_BYTES_MEASURED.get(task)
    if measured is None:
        return COMPRESSED_PIXEL_BYTES_UNMEASURED
    return min(PIXEL_FRAME_BYTES, math.ceil(measured * COMPRESSED_MARGIN))


# ------------------------------------------------------------------ fixed overheads
# Host memory besides the replay.  Measured on the 2-core dev machine (peak RSS, torch 2.13 CPU):
# imports (Python, torch, MuJoCo) 0.27 GiB; one pixel member (hopper_hop, hidden 1024, batch 256,
# two rendering envs, the update's scratch kept by agent/allocator.py) 1.23 GiB in all; one states
# member 0.39 GiB (hidden 32) to 0.49 GiB (hidden 1024) in all.  Rounded up with a margin for the
# Ray worker, W&B's service and a CUDA context on GPU hosts.
PROCESS_OVERHEAD_BYTES = int(1.5 * GiB)
MEMBER_OVERHEAD_BYTES = {"pixels": int(1.5 * GiB), "states": int(0.5 * GiB)}
# A member in a worker process of its own (member_processes) adds that interpreter: measured 2026-12-02 on CPU,
# 122 MiB PSS for a state worker and 220 MiB for a pixel worker (EGL, its replay aside); planned with headroom.
WORKER_PROCESS_BYTES = int(0.5 * GiB)
# A checkpoint adds nothing to count: the worker saves the replay as tensors over its own memory
# (measured: 504 MiB of frames, +2 MiB peak RSS while saving; as numpy arrays it was +3288 MiB).


def replay_bytes_per_transition(config: PlannedConfig) -> int:
    """Replay bytes of one stored transition of this trial (its frame, raw or as lz4 plans it, and slot_bytes)."""
    c = as_trial_config(config)
    layout, action_dim = _observation(c)
    compressed = c.obs_type == "pixels" and c.frame_codec != "none"
    frame = compressed_pixel_bytes(c.task) if compressed else raw_frame_bytes(c.obs_type, layout.frame_shape)
    return frame + slot_bytes(action_dim)


def replay_transitions(config: PlannedConfig) -> int:
    """Slots the worker's replay allocates (agent.replay.replay_slots)."""
    c = as_trial_config(config)
    return replay_slots(c.replay_capacity, c.num_frames, c.action_repeat, c.frame_stack)


def replay_bytes(config: PlannedConfig) -> int:
    return replay_transitions(config) * replay_bytes_per_transition(config)


# MEMBER_OVERHEAD_BYTES was measured up to these sizes; beyond them a member's networks and update need more.
MEASURED_HIDDEN_DIM, MEASURED_BATCH_SIZE, MEASURED_FEATURE_DIM = 1024, 256, 50
# Activations an update keeps per row and hidden unit (actor and twin-critic MLPs, the target's, their backward
# passes): an upper bound counted from agent/drqv2.py's five passes (two layers each, forward and backward).
UPDATE_HIDDEN_ACTIVATIONS = 40


def compute_bytes(config: PlannedConfig) -> int:
    """Memory of one member's networks and one update: parameters, gradients and Adam's two moments
    (``network_numbers``), and the activations of a batch (hidden-wide, and the encoder's for pixels)."""
    c = as_trial_config(config)
    numbers, convs = _networks(c)
    weights = PARAM_BYTES * (numbers.saved + 3 * numbers.trained)
    activations = PARAM_BYTES * c.batch_size * c.hidden_dim * UPDATE_HIDDEN_ACTIVATIONS
    if convs:
        largest = max(math.prod(shape) for shape in convs)  # the first convolution's output
        activations += PARAM_BYTES * c.batch_size * largest * len(convs) * 3  # online, target, augmented
    return weights + activations


def member_bytes(config: PlannedConfig) -> int:
    """Host memory of one member: its replay plus the fixed per-member overhead (measured), plus what networks
    and batches larger than the measured ones add (``compute_bytes``; issue #19: hidden_dim and batch_size of
    a hundred thousand need hundreds of GiB, which the fixed overhead said fitted)."""
    c = as_trial_config(config)
    overhead = MEMBER_OVERHEAD_BYTES[c.obs_type]
    if c.member_processes:
        overhead += WORKER_PROCESS_BYTES
    measured = c.model_copy(
        update={
            "hidden_dim": min(c.hidden_dim, MEASURED_HIDDEN_DIM),
            "batch_size": min(c.batch_size, MEASURED_BATCH_SIZE),
            "feature_dim": min(c.feature_dim, MEASURED_FEATURE_DIM),
        }
    )
    return replay_bytes(c) + overhead + max(0, compute_bytes(c) - compute_bytes(measured))


def pack_bytes(configs: Sequence[PlannedConfig]) -> int:
    """Host memory of one pack process: its members plus one process overhead."""
    return PROCESS_OVERHEAD_BYTES + sum(member_bytes(c) for c in configs)


def max_members(config: PlannedConfig, memory: int) -> int:
    """How many members like ``config`` one process can hold in ``memory`` bytes (0: not even one)."""
    return max(0, (memory - PROCESS_OVERHEAD_BYTES) // member_bytes(config))


# ------------------------------------------------------------------ machine memory
def local_memory_bytes() -> int:
    """Physical memory of this machine."""
    return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))


_SIZE_RE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'128GiB', '128G', '512 GB', '1.5T' or a number of bytes -> bytes (binary units: G = GiB)."""
    match = _SIZE_RE.fullmatch(str(text))
    if not match:
        raise ValueError(f"{text!r}: expected a size such as 128GiB, 512G or a number of bytes")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def fmt_bytes(n: float) -> str:
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:.0f} MiB"
    return f"{n:.0f} B"


# ------------------------------------------------------------------ disk (the result store)
# A trial's checkpoint (agent/checkpoint.py, agent/train.py save_checkpoint) holds its replay (with
# `checkpoint_replay`, the default: the same arrays the replay holds in memory, so `replay_bytes` at full
# fill), its networks with BN statistics, the critic target, the optimizers' state and a few small
# things (random streams, counters, the metric window): CHECKPOINT_FIXED_BYTES bounds those and the file
# format.  The worker keeps the latest and the previous checkpoint (`checkpoint/`, `checkpoint.prev/`) while
# the trial runs and writes the next one beside them (`checkpoint.tmp/`) before it drops the previous; a
# finished trial keeps its latest one only, without its replay unless `keep_replay` (issue #19).  With
# `ray_checkpoints`, Ray keeps a copy of each pack's latest checkpoint (num_to_keep=1, also
# after the experiment) under `_ray/`, and holds the next copy while it persists it, before it deletes the
# older one.  Metrics: a row of metrics.csv is ~0.3 KB; METRICS_ROW_BYTES also covers W&B's offline copy.
PARAM_BYTES = 4  # float32 parameters, statistics and optimizer moments (precision changes only the compute)
CHECKPOINT_FIXED_BYTES = 256 * 1024  # measured: a states trial's checkpoint is its replay + networks + < 10 KB
KEPT_CHECKPOINTS = 1  # checkpoint/ stays in a finished trial's directory (its checkpoint.prev/ is removed)
RUNNING_EXTRA_CHECKPOINTS = 1  # checkpoint.prev/ of a running trial
WRITING_CHECKPOINTS = 1  # checkpoint.tmp/ while a running trial writes its next one
METRICS_ROW_BYTES = 1024


def network_numbers(config: PlannedConfig) -> ParameterCount:
    """The numbers a checkpoint saves for one trial's networks and those its optimizers train: the agent's
    networks built on the meta device (agent.networks.parameter_count)."""
    return _networks(as_trial_config(config))[0]


# The members of a pack differ only in PACK_MEMBER_KEYS, never in their networks' shapes: counted once per pack.
_MEMBER_KEY_DEFAULTS = {key: FIELD_DEFAULTS[key] for key in PACK_MEMBER_KEYS}


def _networks(config: TrialConfig) -> tuple[ParameterCount, list[tuple[int, int, int]]]:
    """(the numbers of a trial's networks, the encoder's (C, H, W) after each convolution: none for states)."""
    return _built_networks(config.model_copy(update=_MEMBER_KEY_DEFAULTS))


@functools.cache
def _built_networks(config: TrialConfig) -> tuple[ParameterCount, list[tuple[int, int, int]]]:
    # agent.networks imports torch (seconds): paid by a plan that counts networks, not by every importer (the CLI).
    from agent.networks import Encoder, parameter_count

    layout, action_dim = _observation(config)
    convs = Encoder.conv_shapes(layout.obs_shape) if config.obs_type == "pixels" else []
    return parameter_count(config, layout.obs_shape, action_dim), convs


def network_state_bytes(config: PlannedConfig) -> int:
    """Checkpoint bytes of one trial's networks and optimizer state (Adam: two moments, SGD: one)."""
    c = as_trial_config(config)
    numbers = network_numbers(c)
    moments = 2 if c.optimizer == "adam" else 1
    return PARAM_BYTES * (numbers.saved + moments * numbers.trained)


def checkpoint_bytes(config: PlannedConfig) -> int:
    """Planned size of one checkpoint of this trial at its largest (full replay, if it is saved)."""
    c = as_trial_config(config)
    replay = replay_bytes(c) if c.checkpoint_replay else 0
    return replay + network_state_bytes(c) + CHECKPOINT_FIXED_BYTES


def finished_checkpoint_bytes(config: PlannedConfig) -> int:
    """Planned size of the checkpoint a finished trial keeps: without its replay unless ``keep_replay``
    (agent.checkpoint.prune_finished; issue #19)."""
    c = as_trial_config(config)
    if c.keep_replay:
        return checkpoint_bytes(c)
    return network_state_bytes(c) + CHECKPOINT_FIXED_BYTES


def metrics_bytes(config: PlannedConfig) -> int:
    """metrics.csv and W&B's offline copy of one trial: one row per log point and per evaluation."""
    c = as_trial_config(config)
    rows = c.num_frames // max(1, c.log_every_frames)
    rows += c.num_frames // max(1, c.eval_every_frames) + 2
    return rows * METRICS_ROW_BYTES


@dataclass(frozen=True)
class DiskPlan:
    """Peak bytes the result store grows by while the planned packs run (an upper bound)."""

    trials: int
    running_trials: int  # members of the packs that run at once (the largest ones)
    running_packs: int
    largest_checkpoint: int
    kept: int  # the checkpoint every finished trial keeps + the latest and previous one of each running trial
    writing: int  # the checkpoint each running trial writes beside them
    ray: int  # Ray's kept copy of every pack's checkpoint + the one it persists for each running pack
    metrics: int
    replays_kept: int = 0  # finished trials that keep their replay (keep_replay); the others drop it

    @property
    def total(self) -> int:
        return self.kept + self.writing + self.ray + self.metrics

    def breakdown(self) -> str:
        ray = (
            f" + Ray's copies {fmt_bytes(self.ray)} (one per pack, kept, + one being persisted per running pack)"
            if self.ray
            else " (no Ray copies: ray_checkpoints false)"
        )
        replays = (
            "every replay dropped when its trial finishes (keep_replay: false)"
            if not self.replays_kept
            else f"{self.replays_kept} of them with their replay (keep_replay: true)"
        )
        return (
            f"{self.trials} trials x {KEPT_CHECKPOINTS} kept checkpoint (the latest; {replays}) + "
            f"{self.running_trials} running trials x {KEPT_CHECKPOINTS + RUNNING_EXTRA_CHECKPOINTS} at full size "
            f"(latest, previous) {fmt_bytes(self.kept)} + "
            f"{self.running_trials} running trials x 1 being written "
            f"{fmt_bytes(self.writing)}{ray} + metrics {fmt_bytes(self.metrics)}; "
            f"the largest checkpoint {fmt_bytes(self.largest_checkpoint)}"
        )


def store_disk_plan(packs: Sequence[Pack], running_packs: int, ray_checkpoints: bool = True) -> DiskPlan:
    """Peak disk the store needs for ``packs`` when ``running_packs`` of them run at once.

    Every trial to run ends with its latest checkpoint in the store; the trials of the ``running_packs``
    largest packs also hold their previous one and write one more at a time; with ``ray_checkpoints`` Ray keeps one
    copy of each pack's checkpoint and persists the next before it deletes the older (running packs).
    Checkpoints are counted at their largest (full replay), also for trials that resume (their current
    checkpoints are already on disk and smaller): an upper bound."""
    sizes = [[checkpoint_bytes(c) for c in p.configs] for p in packs]
    running = sorted(sizes, key=sum, reverse=True)[: max(0, running_packs)]
    every = sum(sum(s) for s in sizes)
    in_flight = sum(sum(s) for s in running)
    # Each finished trial keeps one checkpoint, its replay dropped unless keep_replay; a running one holds its
    # latest and its previous at full size (counted for the running packs, on top of their finished size).
    finished = sum(finished_checkpoint_bytes(c) for p in packs for c in p.configs)
    return DiskPlan(
        trials=sum(len(s) for s in sizes),
        running_trials=sum(len(s) for s in running),
        running_packs=len(running),
        largest_checkpoint=max((max(s) for s in sizes if s), default=0),
        kept=KEPT_CHECKPOINTS * finished + (KEPT_CHECKPOINTS + RUNNING_EXTRA_CHECKPOINTS) * in_flight,
        replays_kept=sum(as_trial_config(c).keep_replay for p in packs for c in p.configs),
        writing=WRITING_CHECKPOINTS * in_flight,
        ray=(every + in_flight) if ray_checkpoints else 0,
        metrics=sum(metrics_bytes(c) for p in packs for c in p.configs),
    )


def free_disk_bytes(path: Path) -> tuple[int, Path]:
    """(free bytes for this user, the existing directory measured): the nearest existing parent of ``path``."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


# ------------------------------------------------------------------ packed speed
# Measured aggregate speed-up of a pack of K members over one trial alone, on the same machine and
# resources: (frames/s of all K members together) / (frames/s of one trial), keyed by
# (obs_type, hidden_dim, device kind "cpu"|"cuda", K, frame_codec, loop), loop "in_process" (members on
# threads of the pack process) or "workers" (member_processes: a worker process per member, issue #17).
# Measured numbers only:
# - CPU, states: `make bench` (its packed section: a pack process with 2 torch threads on the 2-core dev
#   machine, AMD EPYC family/model 25/17, AVX-512, 2026-11-26; bench/latest.json).
# - GPU, pixels: `python -m bench.packed` on one NVIDIA H200 with 16 cores of an Intel Xeon family/model 6/207
#   (AVX-512), torch 2.11+cu130, 2026-11-26, one environment thread per member (bench/gpu_h200.json): K=16
#   against K=1 with lz4 over 1000 seed + 2000 learning frames, side by side; K=4 and K=16 without compression
#   over 600 + 600 frames against a K=1 run of the same length (K=4 side by side; K=16 in an earlier call, on
#   another H200 machine of the same kind).  Far below issue #9's goal (>= 8x): the pack's
#   update is 2.4x faster per member than one trial's, but the loop is bound by the CPU side (environment
#   steps, rendering and, with lz4, replay decoding) of all members in one Python process.
PACKED_SPEEDUPS: dict[tuple[str, int, str, int, str, str], float] = {
    ("states", 256, "cpu", 2, "none", "in_process"): 1.35,
    ("states", 256, "cpu", 4, "none", "in_process"): 1.35,
    ("states", 256, "cpu", 8, "none", "in_process"): 1.52,
    ("states", 1024, "cpu", 2, "none", "in_process"): 1.08,
    ("states", 1024, "cpu", 4, "none", "in_process"): 1.00,
    ("states", 1024, "cpu", 8, "none", "in_process"): 1.04,
    ("pixels", 1024, "cuda", 16, "lz4", "in_process"): 0.89,
    ("pixels", 1024, "cuda", 4, "none", "in_process"): 1.38,
    ("pixels", 1024, "cuda", 16, "none", "in_process"): 1.78,
}


def device_kind(config: TrialConfig) -> str:
    return "cuda" if config.device.startswith("cuda") else "cpu"


def packed_speedup(config: PlannedConfig, size: int) -> tuple[float, str | None]:
    """(aggregate speed-up of a pack of ``size``, a note when it is assumed rather than measured)."""
    if size <= 1:
        return 1.0, None
    c = as_trial_config(config)
    key = (
        c.obs_type,
        c.hidden_dim,
        device_kind(c),
        int(size),
        c.frame_codec,
        "workers" if c.member_processes else "in_process",
    )
    if key in PACKED_SPEEDUPS:
        return PACKED_SPEEDUPS[key], None
    where = "GPU" if key[2] == "cuda" else "CPU"
    codec = "" if key[4] == "none" else f", frame_codec {key[4]}"
    loop = ", members in worker processes" if key[5] == "workers" else ""
    return 1.0, (
        f"no packed measurement for K={size} on {where} ({key[0]}, hidden {key[1]}{codec}{loop}): assuming "
        f"aggregate rate = per-trial rate x 1, i.e. no gain (each member at 1/{size} of a trial's rate)"
    )


def member_meta(
    meta: Mapping[str, Any], pack_id: str, member_ids: Sequence[str], started_at: str, **extra: Any
) -> dict[str, Any]:
    """What a pack member's ``trial.json`` records besides its place in the grid (``meta``): where it trains, when
    its pack started and with whom. The Ray trainable and the in-process runner write the same."""
    return {
        **meta,
        **extra,
        "node": socket.gethostname(),
        "started_at": started_at,
        "pack_id": pack_id,
        "pack_size": len(member_ids),
        "pack_members": list(member_ids),
    }


# ------------------------------------------------------------------ grouping
@dataclass(frozen=True)
class Pack:
    """One Ray trial: ``members`` (TrialSpec) train together; all resume from ``resume_frame``."""

    number: int  # 1-based, in launch order
    pack_id: str  # a single member's trial id, else "pack-" + a hash of the member ids
    members: tuple[Any, ...]
    resume_frame: int

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def trial_ids(self) -> list[str]:
        return [m.trial_id for m in self.members]

    @property
    def configs(self) -> list[dict[str, Any]]:
        return [m.config for m in self.members]

    @property
    def memory_bytes(self) -> int:
        return pack_bytes(self.configs)


def pack_id(trial_ids: Sequence[str]) -> str:
    """Stable for the same members: the trial id itself for one member."""
    if len(trial_ids) == 1:
        return str(trial_ids[0])
    return "pack-" + config_digest({"members": sorted(trial_ids)})


def signature(config: Mapping[str, Any]) -> tuple:
    """The worker's pack signature of a resolved config dict (contract.config.pack_signature)."""

    return pack_signature(TrialConfig(**dict(config)))


def make_packs(pending: Sequence[Any], size: int, resume_frame: Callable[[Any], int]) -> list[Pack]:
    """Group ``pending`` trials (grid order) into packs of at most ``size`` members.

    Members share the pack signature and the resume frame.  Each group of n
    trials becomes ceil(n / size) packs of balanced sizes (they differ by at
    most one), members in grid order; packs are numbered by their first member's
    position, so the order is deterministic and follows the grid's (seed-major).
    """
    if size < 1:
        raise ValueError(f"pack size {size}: must be >= 1")
    groups: dict[tuple, list[tuple[int, Any]]] = {}
    for position, trial in enumerate(pending):
        key = (signature(trial.config), int(resume_frame(trial)))
        groups.setdefault(key, []).append((position, trial))
    chunks: list[tuple[int, int, list[Any]]] = []
    for (_, frame), members in groups.items():
        count = math.ceil(len(members) / size)
        base, extra = divmod(len(members), count)
        start = 0
        for i in range(count):
            n = base + (1 if i < extra else 0)
            chunk = members[start : start + n]
            start += n
            chunks.append((chunk[0][0], frame, [t for _, t in chunk]))
    chunks.sort(key=lambda c: c[0])
    return [
        Pack(number=i, pack_id=pack_id([t.trial_id for t in chunk]), members=tuple(chunk), resume_frame=frame)
        for i, (_, frame, chunk) in enumerate(chunks, 1)
    ]
