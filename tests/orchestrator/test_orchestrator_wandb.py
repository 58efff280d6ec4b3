"""W&B settings resolution and the sink's promise: W&B trouble never stops a trial (no Ray, no network)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from orch_helpers import TINY_BASE

from agent.train import run_trial
from contract.config import build_config
from contract.store import TrialStatus
from orchestrator.wandb_sink import (
    INIT_TIMEOUT_ENV,
    WANDB_INIT_TIMEOUT_S,
    WandbSink,
    flat_config,
    resolve_settings,
    run_id,
)

META = {
    "grid": "g",
    "profile": "local",
    "trial_id": "0123456789ab",
    "cell_id": "c",
    "cell_name": "bn_mode=TTETT",
    "variant": "bn_mode=TTETT",
    "seed": 1,
    "task": "cartpole_swingup",
    "axes": {"bn_mode": "TTETT"},
}


def test_offline_unless_online_use_was_configured(tmp_path: Path) -> None:
    clean = {"WANDB_CONFIG_DIR": str(tmp_path)}  # no `wandb online` settings file there
    assert resolve_settings({}, env=clean)["mode"] == "offline"
    assert resolve_settings({"mode": "online"}, env=clean)["mode"] == "online"
    assert resolve_settings({"mode": "online"}, env={**clean, "WANDB_MODE": "offline"})["mode"] == "offline"
    (tmp_path / "settings").write_text("[default]\nmode = online\n")  # what `wandb online` writes
    assert resolve_settings({}, env=clean)["mode"] == "online"
    assert resolve_settings({}, env={**clean, "WANDB_MODE": "disabled"}) is None
    assert resolve_settings({}, enabled=False, env=clean) is None  # --no-wandb


def test_project_entity_and_tags_from_environment_then_grid(tmp_path: Path) -> None:
    grid = {"project": "from-yaml", "entity": "lab", "tags": ["a"]}
    env = {"WANDB_CONFIG_DIR": str(tmp_path)}
    settings = resolve_settings(grid, env=env)
    assert (settings["project"], settings["entity"], settings["tags"]) == ("from-yaml", "lab", ["a"])
    settings = resolve_settings(grid, env={**env, "WANDB_PROJECT": "p", "WANDB_ENTITY": "e", "WANDB_TAGS": "x,y"})
    assert (settings["project"], settings["entity"], settings["tags"]) == ("p", "e", ["a", "x", "y"])
    assert resolve_settings({}, env=env)["project"] == "bnsweep"


def test_flat_config_has_one_key_per_step_mode_and_axis() -> None:
    config = build_config({"task": "cartpole_swingup", "bn_mode": "TTETT"}).to_dict()
    flat = flat_config(META, config)
    assert flat["bn_mode.critic_i"] == "E" and flat["bn_mode.actor_i"] == "T" and flat["bn_mode"] == "TTETT"
    assert flat["axes.bn_mode"] == "TTETT" and flat["grid"] == "g" and flat["cell_name"] == "bn_mode=TTETT"
    origin = flat_config(
        META, build_config({"task": "cartpole_swingup", "actor_norm": "none", "critic_norm": "none"}).to_dict()
    )
    assert origin["bn_mode.critic_i"] is None
    assert run_id("my grid", "0123456789ab") == "my-grid-0123456789ab"


def test_a_broken_wandb_never_stops_the_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A W&B whose every call raises: one warning, and the trial and its disk results are complete."""
    calls = []

    class BrokenRun:
        tags = ()
        summary = {}

        def define_metric(self, *args, **kwargs):
            calls.append("define_metric")

        def log(self, *args, **kwargs):
            calls.append("log")
            raise ConnectionError("W&B is down")

        def finish(self, *args, **kwargs):
            raise ConnectionError("still down")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: BrokenRun()
    fake.Settings = lambda **kwargs: kwargs
    fake.teardown = lambda: None
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = build_config(
        {**TINY_BASE, "task": "cartpole_swingup", "num_frames": 1500, "eval_every_frames": 0, "torch_threads": 1}
    )  # two threads on two busy cores spin for ages
    sink = WandbSink({"mode": "online", "project": "p", "tags": []}, META, config.to_dict(), tmp_path)
    status = run_trial(config, tmp_path / "trial", sinks=[sink])
    assert status.state == "completed"
    assert calls.count("log") == 1  # the first failure switches the sink off
    assert capsys.readouterr().err.count("warning: W&B") == 1
    assert (tmp_path / "trial" / "metrics.csv").read_text().count("\n") >= 3


def test_wandb_that_cannot_start_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocked = tmp_path / "not_a_directory"
    blocked.write_text("")
    sink = WandbSink(
        {"mode": "offline", "project": "p", "tags": [], "dir": str(blocked / "sub")},
        META,
        build_config({"task": "cartpole_swingup"}).to_dict(),
        tmp_path,
    )
    assert sink.run is None and "could not start the W&B run" in capsys.readouterr().err
    sink.log(0, {"eval/episode_return": 1.0})
    sink.close(TrialStatus("completed"))


def test_the_online_start_wait_is_one_bound_the_driver_may_lower(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    env = {"WANDB_CONFIG_DIR": str(tmp_path)}
    assert WANDB_INIT_TIMEOUT_S == 30
    assert resolve_settings({}, env=env)["init_timeout_s"] == WANDB_INIT_TIMEOUT_S
    assert resolve_settings({}, env={**env, INIT_TIMEOUT_ENV: "5"})["init_timeout_s"] == 5.0
    assert resolve_settings({}, env={**env, INIT_TIMEOUT_ENV: "soon"})["init_timeout_s"] == WANDB_INIT_TIMEOUT_S
    assert f"{INIT_TIMEOUT_ENV}='soon' is not a number of seconds" in capsys.readouterr().err


def test_the_summary_lists_offline_fallbacks_until_they_are_synced(tmp_path: Path) -> None:
    """What ``wandb_offline.json`` records becomes one ``wandb sync`` command; synced runs drop out."""
    from orchestrator.report import wandb_fallback_lines
    from orchestrator.wandb_sink import _record_fallback, offline_fallbacks

    dirs = [tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"]
    runs = [tmp_path / "wandb" / f"offline-run-1-g-t{i}" for i in (1, 2)]
    for directory, run in zip(dirs, runs):
        run.mkdir(parents=True)
        _record_fallback(directory, {"run_id": run.name, "offline_dir": str(run), "timed_out": True, "timeout_s": 30.0})
    assert [r["offline_dir"] for r in offline_fallbacks(dirs[0])] == [str(runs[0])]
    assert offline_fallbacks(dirs[2]) == []  # no file: no fallback
    lines = wandb_fallback_lines(dirs)
    assert lines == [
        "   W&B: 2 trial(s) logged offline after the server did not answer in 30 s; upload with:",
        f"     wandb sync {runs[0]} {runs[1]}",
    ]
    (runs[0] / f"run-{runs[0].name}.wandb.synced").write_text("")  # what `wandb sync` leaves
    assert wandb_fallback_lines(dirs)[1] == f"     wandb sync {runs[1]}"
    _record_fallback(dirs[1], {"offline_dir": str(runs[1]), "timed_out": False, "reason": "401"})
    assert "after their online start failed" in wandb_fallback_lines(dirs)[0]
    assert len(offline_fallbacks(dirs[1])) == 2  # a resumed trial's fallbacks accumulate
