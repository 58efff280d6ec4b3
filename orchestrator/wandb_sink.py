"""W&B as a view of a trial: one run per trial, never in the way of the results on disk.

The worker's disk sink is the source of truth.  This sink turns every failure
(no network, bad credentials, a W&B bug) into one warning and then goes quiet,
so a trial never stops and never loses a row because of W&B.

Settings are resolved once on the driver (``resolve_settings``) and shipped to
each trial, so a trial on another machine logs to the same project without
needing the driver's environment; credentials are never shipped (each machine
needs ``wandb login`` or ``WANDB_API_KEY`` for online use).
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_PROJECT = "bnsweep"
FRAME = "frame"


def _settings_file_mode(env: Mapping[str, str]) -> str | None:
    """The mode `wandb online`/`wandb offline` wrote into W&B's global settings file, if any."""
    config_dir = env.get("WANDB_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.join(config_dir, "settings"))
        return parser.get("default", "mode", fallback=None)
    except configparser.Error:
        return None


def resolve_settings(grid_wandb: Mapping[str, Any], enabled: bool = True,
                     env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """W&B settings for every trial of a sweep, or None when W&B is off.

    Offline unless the user asked for online use: WANDB_MODE, then the grid's
    ``wandb.mode``, then the mode saved by ``wandb online``; otherwise offline
    (runs are written locally and uploaded later with ``wandb sync``).
    Project/entity: WANDB_PROJECT/WANDB_ENTITY, then the grid, then ``bnsweep``.
    """
    env = os.environ if env is None else env
    if not enabled or str(env.get("WANDB_DISABLED", "")).lower() in ("1", "true", "yes"):
        return None
    mode = env.get("WANDB_MODE") or grid_wandb.get("mode") or _settings_file_mode(env) or "offline"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode == "disabled":
        return None
    if mode not in ("online", "offline"):
        mode = "offline"
    tags = list(grid_wandb.get("tags") or [])
    tags += [t.strip() for t in env.get("WANDB_TAGS", "").split(",") if t.strip()]
    return {
        "mode": mode,
        "project": env.get("WANDB_PROJECT") or grid_wandb.get("project") or DEFAULT_PROJECT,
        "entity": env.get("WANDB_ENTITY") or grid_wandb.get("entity") or None,
        "tags": tags,
        "dir": env.get("WANDB_DIR") or None,  # None: inside the trial's result directory
    }


def run_id(grid: str, trial_id: str) -> str:
    """Stable across restarts, so a resumed trial continues its W&B run; unique per grid and trial."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{grid}-{trial_id}")[:64]


def flat_config(meta: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a dashboard may group or filter by, one flat key each.

    The trial config as is, the grid identity, one key per swept axis
    (``axes.<name>``) and one key per update step's BN mode (``bn_mode.critic_i``...).
    """
    from orchestrator.grid import bn_mode_columns

    flat: dict[str, Any] = dict(config)
    flat.update(bn_mode_columns(config.get("bn_mode")))
    for key in ("grid", "profile", "trial_id", "cell_id", "cell_name", "variant"):
        if key in meta:
            flat[key] = meta[key]
    for key, value in (meta.get("axes") or {}).items():
        flat[f"axes.{key}"] = value
    return flat


class WandbSink:
    """A ``MetricSink`` that mirrors the worker's log rows into one W&B run.

    Several of these live in one process when a pack trains several trials: each has its own
    run (``wandb.init(reinit="create_new")``, W&B >= 0.19) and logs through its run object, never
    the global ``wandb.run``.  ``teardown=False`` leaves W&B's service running after ``close``: the
    pack's trainable stops it once, after every member's run has finished (a teardown finishes
    every run of the process).
    """

    def __init__(self, settings: Mapping[str, Any], meta: Mapping[str, Any], config: Mapping[str, Any],
                 out_dir: Path, teardown: bool = True):
        self.run = None
        self.warned = False
        self.teardown = teardown
        try:
            import wandb

            directory = Path(settings.get("dir") or out_dir)
            directory.mkdir(parents=True, exist_ok=True)
            tags = [meta["grid"], str(meta.get("profile", "")), meta["task"], *settings.get("tags", [])]
            self.run = wandb.init(
                project=settings["project"], entity=settings.get("entity"), mode=settings["mode"],
                dir=str(directory), id=run_id(meta["grid"], meta["trial_id"]), resume="allow",
                reinit="create_new",  # one run per pack member, side by side in this process
                name=f"{meta['cell_name']} | seed {meta['seed']}", group=meta["cell_name"],
                job_type=meta["grid"], tags=sorted({t[:64] for t in tags if t}),
                config=flat_config(meta, config),
                settings=wandb.Settings(
                    init_timeout=120, console="off", silent=True,
                    # Two trials share two cores: system-metric sampling would take time from training.
                    x_disable_stats=True, x_disable_machine_info=True, disable_git=True, save_code=False,
                    x_save_requirements=False),
            )
            self.run.define_metric(FRAME)
            self.run.define_metric("*", step_metric=FRAME)
        except Exception as err:  # noqa: BLE001 - any W&B problem only costs the W&B view
            self.warn("could not start the W&B run", err)
            self.run = None

    def warn(self, what: str, err: BaseException) -> None:
        if not self.warned:
            print(f"warning: W&B: {what}: {type(err).__name__}: {err}; the trial continues, results stay on disk",
                  file=sys.stderr)
            self.warned = True

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({FRAME: int(frame), **{k: float(v) for k, v in metrics.items() if v is not None}})
        except Exception as err:  # noqa: BLE001
            self.warn("log failed", err)
            self.run = None

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            state = status.get("status")
            run.summary.update({"status": state, "final_frame": status.get("frame"),
                                "wall_time_s": status.get("wall_time_s")})
            if state in ("diverged", "failed"):
                run.tags = tuple(run.tags or ()) + (str(state),)
            run.finish(exit_code=0 if state in ("completed", "diverged") else 1)
        except Exception as err:  # noqa: BLE001
            self.warn("finishing the run failed", err)
        if not self.teardown:
            return
        try:
            import wandb

            wandb.teardown()  # stop the W&B service process with the trial
        except Exception:  # noqa: BLE001
            pass
