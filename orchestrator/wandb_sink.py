"""W&B as a view of a trial: one run per trial, never in the way of the results on disk.

The worker's disk sink is the source of truth.  This sink turns every failure
(no network, bad credentials, a W&B bug) into one warning and then goes quiet,
so a trial never stops and never loses a row because of W&B.

Settings are resolved once on the driver (``resolve_settings``) and shipped to
each trial, so a trial on another machine logs to the same project without
needing the driver's environment; credentials are never shipped (each machine
needs ``wandb login`` or ``WANDB_API_KEY`` for online use).

Online, the start of a run waits at most ``WANDB_INIT_TIMEOUT_S`` for the server.
When the online start fails (no answer in time, a refused key, ...) the trial logs
to an offline run with the same run id instead, records it in its directory
(``wandb_offline.json``: the offline run's directory and why) and the sweep's
summary prints the ``wandb sync`` command that uploads it (issue #11).
"""

from __future__ import annotations

import configparser
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.modes import STEP_NAMES
from contract.status import DIVERGED, FAILED, FINISHED_STATUSES
from contract.store import TrialStatus, atomic_write_text, read_json_object

DEFAULT_PROJECT = "bnsweep"
FRAME = "frame"

# The longest a trial waits for the W&B server when it starts its run online (W&B's init_timeout).  W&B's own
# default is 90 s and this sink asked for 120 s: with the server unreachable every trial then waited ≈ 2 min 10 s
# before training (a 10 s smoke trial took 2 min 11 s; issue #11).  A server that answers starts a run in a few
# seconds, so 30 s leaves it ample room and caps what an outage costs a trial; after it the trial logs offline
# (same run id, uploaded later with `wandb sync`).  The driver reads INIT_TIMEOUT_ENV to change it (tests lower
# it); the value travels to the trials in the settings (``init_timeout_s``).
WANDB_INIT_TIMEOUT_S = 30.0
INIT_TIMEOUT_ENV = "BNSWEEP_WANDB_INIT_TIMEOUT"
# In a trial directory: the offline runs a trial logged to after its online start failed, and why.
OFFLINE_FALLBACK_FILE = "wandb_offline.json"


def _settings_file_mode(env: Mapping[str, str]) -> str | None:
    """The mode `wandb online`/`wandb offline` wrote into W&B's global settings file, if any."""
    config_dir = env.get("WANDB_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".config", "wandb")
    parser = configparser.ConfigParser()
    try:
        parser.read(os.path.join(config_dir, "settings"))
        return parser.get("default", "mode", fallback=None)
    except configparser.Error:
        return None


def _init_timeout(env: Mapping[str, str]) -> float:
    raw = env.get(INIT_TIMEOUT_ENV)
    if not raw:
        return WANDB_INIT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        print(
            f"warning: {INIT_TIMEOUT_ENV}={raw!r} is not a number of seconds > 0; W&B waits {WANDB_INIT_TIMEOUT_S:g} s",
            file=sys.stderr,
        )
        return WANDB_INIT_TIMEOUT_S
    return value


def resolve_settings(
    grid_wandb: Mapping[str, Any], enabled: bool = True, env: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """W&B settings for every trial of a sweep, or None when W&B is off.

    Offline unless the user asked for online use: WANDB_MODE, then the grid's
    ``wandb.mode``, then the mode saved by ``wandb online``; otherwise offline
    (runs are written locally and uploaded later with ``wandb sync``).
    Project/entity: WANDB_PROJECT/WANDB_ENTITY, then the grid, then ``bnsweep``.
    ``init_timeout_s``: WANDB_INIT_TIMEOUT_S unless ``BNSWEEP_WANDB_INIT_TIMEOUT`` says otherwise.
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
        "init_timeout_s": _init_timeout(env),
    }


def run_id(grid: str, trial_id: str) -> str:
    """Stable across restarts, so a resumed trial continues its W&B run; unique per grid and trial."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{grid}-{trial_id}")[:64]


def bn_mode_columns(mode: str | None) -> dict[str, str | None]:
    """{'bn_mode.actor_i': 'T', ...} for dashboards that group by one update step's mode."""
    letters = mode if mode else [None] * len(STEP_NAMES)
    return {f"bn_mode.{step}": letter for step, letter in zip(STEP_NAMES, letters, strict=True)}


def flat_config(meta: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a dashboard may group or filter by, one flat key each.

    The trial config as is, the grid identity, one key per swept axis
    (``axes.<name>``) and one key per update step's BN mode (``bn_mode.critic_i``...).
    """
    flat: dict[str, Any] = dict(config)
    flat.update(bn_mode_columns(config.get("bn_mode")))
    for key in ("grid", "profile", "trial_id", "cell_id", "cell_name", "variant"):
        if key in meta:
            flat[key] = meta[key]
    for key, value in (meta.get("axes") or {}).items():
        flat[f"axes.{key}"] = value
    return flat


def offline_fallbacks(trial_dir: Path) -> list[dict[str, Any]]:
    """The offline runs recorded in a trial's ``wandb_offline.json`` (none when the file is absent or unreadable)."""

    runs = (read_json_object(Path(trial_dir) / OFFLINE_FALLBACK_FILE) or {}).get("runs")
    return [r for r in runs if isinstance(r, dict) and r.get("offline_dir")] if isinstance(runs, list) else []


def _record_fallback(trial_dir: Path, entry: Mapping[str, Any]) -> None:

    runs = [*offline_fallbacks(trial_dir), dict(entry)]  # a resumed trial may have fallen back before
    atomic_write_text(Path(trial_dir) / OFFLINE_FALLBACK_FILE, json.dumps({"runs": runs}, indent=2) + "\n")


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


class _Process:
    """What the W&B runs of one process share: a pack's members start their runs one after another in it."""

    offline_reason: str | None = None  # an online start failed here: later runs start offline at once
    offline_timed_out = False  # ... because the server did not answer in time
    open_runs = 0  # runs started by sinks of this process and not yet closed


def _run_settings(wandb: Any, **extra: Any) -> Any:
    return wandb.Settings(
        console="off",
        silent=True,
        # Two trials share two cores: system-metric sampling would take time from training.
        x_disable_stats=True,
        x_disable_machine_info=True,
        disable_git=True,
        save_code=False,
        x_save_requirements=False,
        **extra,
    )


def teardown_wandb(warn: Callable[[str], None] | None = None) -> None:
    """Stop this process's W&B service (it finishes every run of the process); never raises, never a traceback.

    A failure becomes one line through ``warn`` (default: printed to stderr as a W&B warning).
    """
    try:
        import wandb

        wandb.teardown()
    except Exception as err:  # noqa: BLE001 - W&B never costs results
        line = f"stopping the W&B service failed: {_one_line(err)}"
        if warn is not None:
            warn(line)
        else:
            print(f"warning: W&B: {line}; results stay on disk", file=sys.stderr)


class WandbSink:
    """A ``MetricSink`` that mirrors the worker's log rows into one W&B run.

    Several of these live in one process when a pack trains several trials: each has its own
    run (``wandb.init(reinit="create_new")``, W&B >= 0.19) and logs through its run object, never
    the global ``wandb.run``.  ``teardown=False`` leaves W&B's service running after ``close``: the
    pack's trainable stops it once, after every member's run has finished (a teardown finishes
    every run of the process).

    Online, the start waits at most ``settings["init_timeout_s"]``; when it fails the run is
    started offline with the same id (``offline_dir``), recorded in ``wandb_offline.json``.
    """

    def __init__(
        self,
        settings: Mapping[str, Any],
        meta: Mapping[str, Any],
        config: Mapping[str, Any],
        out_dir: Path,
        teardown: bool = True,
    ):
        self.run = None
        self.warned = False
        self.teardown = teardown
        self.offline_dir: Path | None = None  # set when the run fell back to offline
        self.counted = False  # self.run counts in _Process.open_runs
        try:
            import wandb

            directory = Path(settings.get("dir") or out_dir)
            directory.mkdir(parents=True, exist_ok=True)
            tags = [meta["grid"], str(meta.get("profile", "")), meta["task"], *settings.get("tags", [])]
            init = {
                "project": settings["project"],
                "entity": settings.get("entity"),
                "dir": str(directory),
                "id": run_id(meta["grid"], meta["trial_id"]),
                "resume": "allow",
                "reinit": "create_new",  # one run per pack member, side by side in this process
                "name": f"{meta['cell_name']} | seed {meta['seed']}",
                "group": meta["cell_name"],
                "job_type": meta["grid"],
                "tags": sorted({t[:64] for t in tags if t}),
                "config": flat_config(meta, config),
            }
            if settings["mode"] != "online":
                self.run = wandb.init(mode=settings["mode"], settings=_run_settings(wandb), **init)
            elif _Process.offline_reason is not None:
                self._start_offline(
                    wandb,
                    init,
                    Path(out_dir),
                    _Process.offline_reason,
                    waited_s=0.0,
                    timeout_s=None,
                    timed_out=_Process.offline_timed_out,
                    earlier=True,
                )
            else:
                timeout_s = float(settings.get("init_timeout_s") or WANDB_INIT_TIMEOUT_S)
                started = time.monotonic()
                try:
                    self.run = wandb.init(mode="online", settings=_run_settings(wandb, init_timeout=timeout_s), **init)
                except Exception as err:  # noqa: BLE001 - no server, a refused key, ...: log offline instead
                    waited_s = time.monotonic() - started
                    self._fall_back(wandb, init, Path(out_dir), err, waited_s, timeout_s)
            if self.run is not None:
                _Process.open_runs += 1
                self.counted = True
                self.run.define_metric(FRAME)
                self.run.define_metric("*", step_metric=FRAME)
        except Exception as err:  # noqa: BLE001 - any W&B problem only costs the W&B view
            self.warn(f"could not start the W&B run: {_one_line(err)}")
            self._drop_run()

    def _fall_back(
        self, wandb: Any, init: Mapping[str, Any], out_dir: Path, err: BaseException, waited_s: float, timeout_s: float
    ) -> None:
        """The online start failed: the same run, offline, in a fresh W&B service."""
        text = str(err).lower()
        timed_out = (
            isinstance(err, TimeoutError) or "deadline exceeded" in text or "timed out" in text or waited_s >= timeout_s
        )
        reason = (
            f"the server did not answer within {timeout_s:g} s" if timed_out else "the online start failed"
        ) + f" ({_one_line(err)})"
        _Process.offline_reason, _Process.offline_timed_out = reason, timed_out
        if _Process.open_runs:
            # The failed start left its run id registered in this process's W&B service, which only a teardown
            # releases, and a teardown would end the other members' open runs: this member goes without W&B.
            self.warn(
                f"{reason}; no offline run either while {_Process.open_runs} other W&B run(s) of this process are open"
            )
            return
        teardown_wandb(lambda line: None)  # a fresh service for the offline run; a failure shows at the next init
        try:
            self._start_offline(wandb, init, out_dir, reason, waited_s, timeout_s, timed_out=timed_out)
        except Exception as offline_err:  # noqa: BLE001
            self.warn(f"{reason}; the offline run could not start either: {_one_line(offline_err)}")
            self._drop_run()

    def _start_offline(
        self,
        wandb: Any,
        init: Mapping[str, Any],
        out_dir: Path,
        reason: str,
        waited_s: float,
        timeout_s: float | None,
        timed_out: bool = False,
        earlier: bool = False,
    ) -> None:
        self.run = wandb.init(mode="offline", settings=_run_settings(wandb), **init)
        offline_dir = Path(self.run.settings.sync_dir)
        self.offline_dir = offline_dir
        try:
            _record_fallback(
                out_dir,
                {
                    "run_id": init["id"],
                    "offline_dir": str(offline_dir),
                    "reason": reason,
                    "timed_out": timed_out,
                    "timeout_s": timeout_s,
                    "waited_s": round(waited_s, 1),
                    "earlier_run_failed": earlier,
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "sync": f"wandb sync {offline_dir}",
                },
            )
            unrecorded = ""
        except Exception as err:  # noqa: BLE001 - the summary will not list it; the warning still names it
            unrecorded = f"; {OFFLINE_FALLBACK_FILE} not written: {_one_line(err)}"
        because = f"an earlier run of this process could not start online: {reason}" if earlier else reason
        self.warn(f"{because}; logging offline to {offline_dir} (upload later: wandb sync {offline_dir}){unrecorded}")

    def warn(self, line: str) -> None:
        if not self.warned:
            print(f"warning: W&B: {line}; the trial continues, results stay on disk", file=sys.stderr)
            self.warned = True

    def _drop_run(self) -> None:
        if self.counted:
            _Process.open_runs -= 1
            self.counted = False
        self.run = None

    def log(self, frame: int, metrics: Mapping[str, float]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({FRAME: int(frame), **{k: float(v) for k, v in metrics.items() if v is not None}})
        except Exception as err:  # noqa: BLE001
            self.warn(f"log failed: {_one_line(err)}")
            self._drop_run()

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: TrialStatus) -> None:
        if self.run is None:
            return
        run = self.run
        self._drop_run()
        try:
            state = status.state
            run.summary.update({"status": str(state), "final_frame": status.frame, "wall_time_s": status.wall_time_s})
            if state in (DIVERGED, FAILED):
                run.tags = tuple(run.tags or ()) + (str(state),)
            run.finish(exit_code=0 if state in FINISHED_STATUSES else 1)
        except Exception as err:  # noqa: BLE001
            self.warn(f"finishing the run failed: {_one_line(err)}")
        if self.teardown:
            teardown_wandb(self.warn)  # stop the W&B service process with the trial
