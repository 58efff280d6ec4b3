"""The Ray Tune function trainable: one worker trial, with Tune and W&B sinks.

Runs inside a Ray worker process.  The worker (``agent.train.run_trial``) writes
the result store; this adds ``ray.tune.report`` at every log point, registers
the worker's checkpoints as ``ray.tune.Checkpoint``s (so Ray can restart a trial
on another node after a crash), and turns a failed trial into an exception so
``FailureConfig(max_failures)`` retries it (the worker resumes from its checkpoint).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator import store


class TrialFailed(RuntimeError):
    """Raised so Ray counts the failure and retries up to max_failures."""


class TuneSink:
    """Forwards the worker's log rows and checkpoints to Ray Tune (live view, Tune's fault tolerance)."""

    def __init__(self, checkpoints: bool = True):
        self.checkpoints = checkpoints

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        tune.report({"frame": int(frame), **{k: float(v) for k, v in metrics.items() if v is not None}})

    def checkpoint(self, frame: int, path: Path) -> None:
        # The frame marker (.metadata.json) is written either way: the planner reads it to know
        # where an unfinished trial resumes, and restore_ray_checkpoint compares it with Ray's copy.
        checkpoint = tune.Checkpoint.from_directory(str(path))
        checkpoint.set_metadata({"frame": int(frame)})
        if self.checkpoints:
            tune.report({"frame": int(frame), "checkpoint_frame": int(frame)}, checkpoint=checkpoint)

    def close(self, status: Mapping[str, Any]) -> None:
        pass


def restore_ray_checkpoint(out_dir: Path) -> bool:
    """Put Ray's latest checkpoint of this trial into the store when the store's own one is missing or older.

    The store's checkpoint is normally the newest (the worker writes it first);
    Ray's copy matters when the trial restarts on a node that cannot see it.
    """
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    from agent.sinks import CHECKPOINT_DIR

    target = out_dir / CHECKPOINT_DIR
    ray_frame = (checkpoint.get_metadata() or {}).get("frame")
    if target.exists():
        store_frame = store.checkpoint_frame(target.parent)
        if store_frame is None or ray_frame is None or store_frame >= int(ray_frame):
            return False
    staging = out_dir / (CHECKPOINT_DIR + ".ray")
    shutil.rmtree(staging, ignore_errors=True)
    checkpoint.to_directory(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"restored Ray checkpoint (frame {ray_frame}) into {target}", file=sys.stderr)
    return True


def run(param: dict[str, Any]) -> None:
    """Tune entry point; ``param["trial"]`` is the payload built by ``orchestrator.sweep.trial_payload``."""
    # Ray logs every persisted checkpoint at INFO; with hundreds of trials that drowns the console.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    spec = param["trial"]
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    state = store.trial_state(out_dir)
    if state in store.DONE_STATUSES:
        # A restored Ray experiment may still list a trial that the store already has (e.g. run by
        # another sweep of the same grid): the store decides, nothing is recomputed.
        tune.report({"frame": int(spec["config"]["num_frames"]), "trial_status": state, "skipped": 1})
        return
    restore_ray_checkpoint(out_dir)
    meta = {**spec["meta"], "resources": spec.get("resources"), "node": socket.gethostname(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    store.write_trial_meta(out_dir, meta)

    from agent.config import build_config
    from agent.sinks import read_status, write_status
    from agent.train import run_trial

    config = build_config(spec["config"])
    sinks: list[Any] = [TuneSink(checkpoints=spec.get("ray_checkpoints", True))]
    if spec.get("wandb"):
        from orchestrator.wandb_sink import WandbSink

        sinks.append(WandbSink(spec["wandb"], spec["meta"], spec["config"], out_dir))
    try:
        status = run_trial(config, out_dir, sinks)
    except Exception as err:  # run_trial raises only before its own bookkeeping starts (e.g. unreadable checkpoint)
        previous = read_status(out_dir) or {}
        status = {**previous, "status": "failed", "error": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc()}
        write_status(out_dir, status)
        for sink in sinks:
            try:
                sink.close(status)
            except Exception:  # noqa: BLE001 - closing a view must not hide the real error
                pass
    tune.report({"frame": int(status.get("frame", 0)), "trial_status": status["status"],
                 "wall_time_s": float(status.get("wall_time_s", 0.0))})
    if status["status"] == "failed":
        raise TrialFailed(f"trial {spec['trial_id']} failed: {status.get('error')} (see {out_dir / 'status.json'})")


def trial_name(trial: Any) -> str:
    """Ray's display name: readable cell and seed."""
    spec = trial.config["trial"]
    return f"{spec['meta']['cell_name']} s{spec['meta']['seed']}"


def trial_dirname(trial: Any) -> str:
    """Ray's per-trial directory under results/<grid>/_ray/<experiment>/: the trial id, as in the store."""
    return str(trial.config["trial"]["trial_id"])


def worker_env() -> dict[str, str]:
    """Environment the trials need wherever they run (not secrets)."""
    from orchestrator import REPO_ROOT

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for key in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env
