"""Metric names: the contract between the worker that writes ``metrics.csv``, the store, W&B and analysis.
``COLUMNS`` is the header of every ``metrics.csv``; the measures themselves are computed in ``agent/metrics.py``.
"""

from __future__ import annotations

FRAME = "frame"
EVAL_RETURN = "eval/episode_return"
TRAIN_RETURN = "train/episode_return"
TRAIN_LENGTH = "train/episode_length"
Q_BIAS_MEAN = "q_bias/mean"
Q_BIAS_STD = "q_bias/std"
COVERAGE = "coverage/cells"
STATE_COVERAGE = "coverage/state_cells"
CRITIC_LOSS = "losses/critic"
ACTOR_LOSS = "losses/actor"
Q_MEAN = "q/mean"
ACTOR_STD = "actor/std"
BN_MISMATCH = "bn/critic_i_batch_vs_running"
FPS = "perf/fps"
UPDATE_MS = "perf/update_ms"

METRIC_NAMES = (
    EVAL_RETURN,
    TRAIN_RETURN,
    TRAIN_LENGTH,
    Q_BIAS_MEAN,
    Q_BIAS_STD,
    COVERAGE,
    STATE_COVERAGE,
    CRITIC_LOSS,
    ACTOR_LOSS,
    Q_MEAN,
    ACTOR_STD,
    BN_MISMATCH,
    FPS,
    UPDATE_MS,
)
COLUMNS = (FRAME, *METRIC_NAMES)
