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

import math
import os
import re
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.config import TrialConfig, pack_signature
from contract.store import config_digest

GiB = 1024**3

# ------------------------------------------------------------------ replay memory per transition
# The worker's replay (agent/replay.py) stores each frame once, plus per transition: the action
# (float32 x action_dim), reward and discount (float32 each), episode start and end (int64 each).
PIXEL_FRAME_BYTES = 3 * 84 * 84  # one 84x84 RGB uint8 frame: 21,168 B (21,196 B per transition at action_dim 1)
TRANSITION_FIXED_BYTES = 4 + 4 + 8 + 8
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


# (state_dim, action_dim) of every dm_control suite task and Gymnasium MuJoCo v5 task, read from
# their specs (dm_control 1.0.50, gymnasium 1.x); the estimate must not build environments.
TASK_DIMS: dict[str, tuple[int, int]] = {
    "acrobot_swingup": (6, 1),
    "acrobot_swingup_sparse": (6, 1),
    "ball_in_cup_catch": (8, 2),
    "cup_catch": (8, 2),
    "cartpole_balance": (5, 1),
    "cartpole_balance_sparse": (5, 1),
    "cartpole_swingup": (5, 1),
    "cartpole_swingup_sparse": (5, 1),
    "cartpole_three_poles": (11, 1),
    "cartpole_two_poles": (8, 1),
    "cheetah_run": (17, 6),
    "dog_fetch": (232, 38),
    "dog_run": (223, 38),
    "dog_stand": (223, 38),
    "dog_trot": (223, 38),
    "dog_walk": (223, 38),
    "finger_spin": (9, 2),
    "finger_turn_easy": (12, 2),
    "finger_turn_hard": (12, 2),
    "fish_swim": (24, 5),
    "fish_upright": (21, 5),
    "hopper_hop": (15, 4),
    "hopper_stand": (15, 4),
    "humanoid_CMU_run": (137, 56),
    "humanoid_CMU_stand": (137, 56),
    "humanoid_CMU_walk": (137, 56),
    "humanoid_run": (67, 21),
    "humanoid_run_pure_state": (55, 21),
    "humanoid_stand": (67, 21),
    "humanoid_walk": (67, 21),
    "lqr_lqr_2_1": (4, 1),
    "lqr_lqr_6_2": (12, 2),
    "manipulator_bring_ball": (44, 5),
    "manipulator_bring_peg": (44, 5),
    "manipulator_insert_ball": (44, 5),
    "manipulator_insert_peg": (44, 5),
    "pendulum_swingup": (3, 1),
    "point_mass_easy": (4, 2),
    "point_mass_hard": (4, 2),
    "quadruped_escape": (101, 12),
    "quadruped_fetch": (90, 12),
    "quadruped_run": (78, 12),
    "quadruped_walk": (78, 12),
    "reacher_easy": (6, 2),
    "reacher_hard": (6, 2),
    "stacker_stack_2": (49, 5),
    "stacker_stack_4": (63, 5),
    "swimmer_swimmer15": (61, 14),
    "swimmer_swimmer6": (25, 5),
    "walker_run": (24, 6),
    "walker_stand": (24, 6),
    "walker_walk": (24, 6),
    "Ant-v5": (105, 8),
    "HalfCheetah-v5": (17, 6),
    "Hopper-v5": (11, 3),
    "Humanoid-v5": (348, 17),
    "HumanoidStandup-v5": (348, 17),
    "InvertedDoublePendulum-v5": (9, 1),
    "InvertedPendulum-v5": (4, 1),
    "Pusher-v5": (23, 7),
    "Reacher-v5": (10, 2),
    "Swimmer-v5": (8, 2),
    "Walker2d-v5": (17, 6),
}
# Safe upper bounds for a task missing above (the largest above: 348 and 56).
STATE_DIM_BOUND, ACTION_DIM_BOUND = 512, 64

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


def task_dims(task: str) -> tuple[int, int, bool]:
    """(state_dim, action_dim, known): a safe upper bound for tasks not in TASK_DIMS."""
    if task in TASK_DIMS:
        return (*TASK_DIMS[task], True)
    return STATE_DIM_BOUND, ACTION_DIM_BOUND, False


def replay_bytes_per_transition(config: Mapping[str, Any]) -> int:
    """Replay bytes of one stored transition of this trial (frame + action + reward/discount/episode bounds)."""
    state_dim, action_dim, _ = task_dims(str(config.get("task")))
    if config.get("obs_type") == "pixels":
        compressed = str(config.get("frame_codec", "none") or "none") != "none"
        frame = compressed_pixel_bytes(str(config.get("task"))) if compressed else PIXEL_FRAME_BYTES
    else:
        frame = 4 * state_dim  # float32 state vector
    return frame + 4 * action_dim + TRANSITION_FIXED_BYTES


def replay_transitions(config: Mapping[str, Any]) -> int:
    """Slots the worker allocates: replay_capacity, capped by what the trial can fill (agent/train.py's rule)."""
    agent_steps = math.ceil(int(config["num_frames"]) / int(config.get("action_repeat", 1)))
    return min(int(config["replay_capacity"]), agent_steps + 2 * int(config.get("frame_stack", 1)) + 2)


def replay_bytes(config: Mapping[str, Any]) -> int:
    return replay_transitions(config) * replay_bytes_per_transition(config)


# MEMBER_OVERHEAD_BYTES was measured up to these sizes; beyond them a member's networks and update need more.
MEASURED_HIDDEN_DIM, MEASURED_BATCH_SIZE, MEASURED_FEATURE_DIM = 1024, 256, 50
# Activations an update keeps per row and hidden unit (actor and twin-critic MLPs, the target's, their backward
# passes): an upper bound counted from agent/drqv2.py's five passes (two layers each, forward and backward).
UPDATE_HIDDEN_ACTIVATIONS = 40


def compute_bytes(config: Mapping[str, Any]) -> int:
    """Memory of one member's networks and one update: parameters, gradients and Adam's two moments
    (``network_numbers``), and the activations of a batch (hidden-wide, and the encoder's for pixels)."""
    saved, trained = network_numbers(config)
    weights = PARAM_BYTES * (saved + 3 * trained)
    rows = int(config.get("batch_size", MEASURED_BATCH_SIZE))
    hidden = int(config.get("hidden_dim", MEASURED_HIDDEN_DIM))
    activations = PARAM_BYTES * rows * hidden * UPDATE_HIDDEN_ACTIVATIONS
    if config.get("obs_type") == "pixels":
        side = (IMAGE_SIZE - 3) // 2 + 1
        activations += PARAM_BYTES * rows * ENCODER_CHANNELS * side * side * 4 * 3  # 4 convs; online, target, aug
    return weights + activations


def member_bytes(config: Mapping[str, Any]) -> int:
    """Host memory of one member: its replay plus the fixed per-member overhead (measured), plus what networks
    and batches larger than the measured ones add (``compute_bytes``; issue #19: hidden_dim and batch_size of
    a hundred thousand need hundreds of GiB, which the fixed overhead said fitted)."""
    overhead = MEMBER_OVERHEAD_BYTES.get(str(config.get("obs_type")), MEMBER_OVERHEAD_BYTES["pixels"])
    if config.get("member_processes"):
        overhead += WORKER_PROCESS_BYTES
    measured = {
        **config,
        "hidden_dim": min(int(config.get("hidden_dim", MEASURED_HIDDEN_DIM)), MEASURED_HIDDEN_DIM),
        "batch_size": min(int(config.get("batch_size", MEASURED_BATCH_SIZE)), MEASURED_BATCH_SIZE),
        "feature_dim": min(int(config.get("feature_dim", MEASURED_FEATURE_DIM)), MEASURED_FEATURE_DIM),
    }
    return replay_bytes(config) + overhead + max(0, compute_bytes(config) - compute_bytes(measured))


def pack_bytes(configs: Sequence[Mapping[str, Any]]) -> int:
    """Host memory of one pack process: its members plus one process overhead."""
    return PROCESS_OVERHEAD_BYTES + sum(member_bytes(c) for c in configs)


def max_members(config: Mapping[str, Any], memory: int) -> int:
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
ENCODER_CHANNELS, IMAGE_SIZE = 32, 84  # agent/networks.py Encoder (4 conv 3x3, the first with stride 2)


def network_numbers(config: Mapping[str, Any]) -> tuple[int, int]:
    """(numbers a checkpoint saves for the networks, trained parameters) of one trial, counted from the
    architecture of agent/networks.py: encoder (pixels), actor, critic and critic target, each with its
    normalization layers (BatchNorm: weight, bias, running mean and variance, a step counter)."""
    state_dim, action_dim, _ = task_dims(str(config.get("task")))
    feature, hidden = int(config.get("feature_dim", 50)), int(config.get("hidden_dim", 1024))

    def norm(kind: str, width: int) -> tuple[int, int]:
        if kind == "batch_norm":
            return 4 * width + 1, 2 * width
        if kind == "layer_norm":
            return 2 * width, 2 * width
        return 0, 0

    saved = trained = 0
    if config.get("obs_type") == "pixels":
        c, side, in_c = ENCODER_CHANNELS, IMAGE_SIZE, 3 * int(config.get("frame_stack", 3))
        for stride in (2, 1, 1, 1):
            conv = in_c * 9 * c + c
            bn_saved, bn_trained = norm(str(config.get("encoder_norm", "none")), c)
            saved, trained = saved + conv + bn_saved, trained + conv + bn_trained
            in_c, side = c, (side - 3) // stride + 1
        repr_dim = c * side * side
    else:
        repr_dim = state_dim  # states are never stacked
    trunk = repr_dim * feature + feature + 2 * feature  # Linear + LayerNorm

    def mlp(in_dim: int, out_dim: int, kind: str) -> tuple[int, int]:
        linear = in_dim * hidden + hidden + hidden * hidden + hidden + hidden * out_dim + out_dim
        n_saved, n_trained = norm(kind, hidden)
        return linear + 2 * n_saved, linear + 2 * n_trained

    actor_saved, actor_trained = mlp(feature, action_dim, str(config.get("actor_norm", "none")))
    q_saved, q_trained = mlp(feature + action_dim, 1, str(config.get("critic_norm", "none")))
    critic_saved, critic_trained = trunk + 2 * q_saved, trunk + 2 * q_trained
    saved += trunk + actor_saved + 2 * critic_saved  # the critic target is a second critic
    trained += trunk + actor_trained + critic_trained
    return saved, trained


def network_state_bytes(config: Mapping[str, Any]) -> int:
    """Checkpoint bytes of one trial's networks and optimizer state (Adam: two moments, SGD: one)."""
    saved, trained = network_numbers(config)
    moments = 2 if str(config.get("optimizer", "adam")) == "adam" else 1
    return PARAM_BYTES * (saved + moments * trained)


def checkpoint_bytes(config: Mapping[str, Any]) -> int:
    """Planned size of one checkpoint of this trial at its largest (full replay, if it is saved)."""
    replay = replay_bytes(config) if config.get("checkpoint_replay", True) else 0
    return replay + network_state_bytes(config) + CHECKPOINT_FIXED_BYTES


def finished_checkpoint_bytes(config: Mapping[str, Any]) -> int:
    """Planned size of the checkpoint a finished trial keeps: without its replay unless ``keep_replay``
    (agent.checkpoint.prune_finished; issue #19)."""
    if config.get("keep_replay", False):
        return checkpoint_bytes(config)
    return network_state_bytes(config) + CHECKPOINT_FIXED_BYTES


def metrics_bytes(config: Mapping[str, Any]) -> int:
    """metrics.csv and W&B's offline copy of one trial: one row per log point and per evaluation."""
    frames = int(config["num_frames"])
    rows = frames // max(1, int(config.get("log_every_frames", 5000)))
    rows += frames // max(1, int(config.get("eval_every_frames", 10000))) + 2
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
        replays_kept=sum(bool(c.get("keep_replay", False)) for p in packs for c in p.configs),
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


def device_kind(config: Mapping[str, Any]) -> str:
    return "cuda" if str(config.get("device", "cpu")).startswith("cuda") else "cpu"


def packed_speedup(config: Mapping[str, Any], size: int) -> tuple[float, str | None]:
    """(aggregate speed-up of a pack of ``size``, a note when it is assumed rather than measured)."""
    if size <= 1:
        return 1.0, None
    key = (
        str(config.get("obs_type")),
        int(config.get("hidden_dim", 0)),
        device_kind(config),
        int(size),
        str(config.get("frame_codec", "none")),
        "workers" if config.get("member_processes") else "in_process",
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
