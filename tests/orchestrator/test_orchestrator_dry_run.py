"""Dry runs: the plan (table, counts, frames, estimate) from the grid and the store; nothing launched."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from orch_helpers import grid_dict, run_cli, write_grid

from contract import store, tasks
from contract.store import TrialStatus, write_status
from orchestrator import packing
from orchestrator.grid import load_grid
from orchestrator.plan import concurrency, plan_packs


def _fake_finished(results: Path, trial, frames_per_s: float) -> Path:
    """A store entry as the worker leaves it after finishing (status + config), without running it."""
    directory = store.trial_dir(results, trial.grid, trial.trial_id)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(trial.config))
    write_status(directory, TrialStatus("running"))  # along the status machine, as the worker writes it
    write_status(
        directory, TrialStatus("completed", frame=trial.num_frames, wall_time_s=trial.num_frames / frames_per_s)
    )
    return directory


def test_dry_run_prints_the_plan_and_launches_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path, "g.yaml", grid_dict("plan", seeds=[1, 2], frames=5000))
    results = tmp_path / "results"
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0
    header = next(line for line in out.splitlines() if "trial_id" in line)
    for column in ("cell", "task", "seed", "frames", "resources", "state"):
        assert column in header
    rows = [line for line in out.splitlines() if re.match(r"\s+\d+\s+[0-9a-f]{12}\s", line)]
    assert len(rows) == 4 and all("cartpole_swingup" in r and "5,000" in r and "cpu 1" in r for r in rows)
    assert "cells: 2, tasks: 1, seeds: 2 -> 4 trials; 0 done, 4 to run" in out
    assert "frames: 20,000 to run (grid total 20,000)" in out
    assert re.search(r"estimated wall time: \d+(m\d\ds|s)", out)
    assert "reference measurement" in out and "2 trial(s) at a time" in out
    assert "dry run: nothing launched" in out
    assert not results.exists()


def test_dry_run_reads_the_store_and_its_measured_rate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path, "g.yaml", grid_dict("plan", seeds=[1, 2], frames=5000))
    results = tmp_path / "results"
    grid = load_grid(str(path), "local")
    _fake_finished(results, grid.trials[0], frames_per_s=123.0)
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0
    assert "4 trials; 1 done, 3 to run" in out and "frames: 15,000 to run (grid total 20,000)" in out
    assert "123 frames/s per trial, median of 1 finished trials" in out
    row = next(line for line in out.splitlines() if grid.trials[0].trial_id in line)
    assert row.rstrip().endswith("completed")


def test_dry_run_of_an_extended_grid_plans_only_the_new_trials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    original = load_grid(str(write_grid(tmp_path, "a.yaml", grid_dict("plan", seeds=[1]))), "local")
    for trial in original.trials:
        _fake_finished(results, trial, frames_per_s=500.0)
    # one more seed and one more axis value: 3 cells x 2 seeds, of which the 2 old trials are done
    extended = write_grid(tmp_path, "b.yaml", grid_dict("plan", modes=["TTTTT", "TTETT", "ETETT"], seeds=[1, 2]))
    code, out, _ = run_cli(capsys, "--grid", str(extended), "--results", str(results), "--dry-run")
    assert code == 0
    assert "6 trials; 2 done, 4 to run" in out
    planned_new = {t.trial_id for t in load_grid(str(extended), "local").trials} - {t.trial_id for t in original.trials}
    new_rows = [line for line in out.splitlines() if any(tid in line for tid in planned_new)]
    assert len(new_rows) == 4 and all(line.rstrip().endswith("new") for line in new_rows)


def test_dry_run_of_an_unfinished_trial_shows_where_it_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path, "g.yaml", grid_dict("plan", modes=["TTETT"], frames=5000))
    results = tmp_path / "results"
    trial = load_grid(str(path), "local").trials[0]
    directory = store.trial_dir(results, "plan", trial.trial_id)
    (directory / "checkpoint").mkdir(parents=True)
    (directory / "checkpoint" / store.CHECKPOINT_META).write_text(json.dumps({"frame": 3000}))
    write_status(directory, TrialStatus("running", frame=0))
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0
    assert "running @ 3,000" in out and "(1 of them resume from a checkpoint)" in out
    assert "frames: 2,000 to run" in out


def test_dry_run_of_the_paper_profile(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(
        capsys, "--grid", "critic_i_mode", "--profile", "paper", "--results", str(tmp_path / "results"), "--dry-run"
    )
    assert code == 0
    assert "hopper_hop" in out and "cpu 16 gpu 1" in out and "10,100,000" in out
    assert "cells: 3, tasks: 1, seeds: 5 -> 15 trials" in out
    # packs of at most 16: the 10 BN trials in one pack, Origin's 5 seeds (other norms) in another
    assert "15 trials to run in 2 packs of at most 16" in out and "total pack time" in out
    assert "no packed measurement for K=10 on GPU" in out and "members in worker processes" in out
    assert "i.e. no gain" in out
    # lz4 replays, members in worker processes: 10 x (1M transitions x 4,281 B planned + 1.5 GiB + 0.5 GiB) + 1.5 GiB
    assert "needs up to 61.4 GiB" in out and "not checked: this profile needs a GPU and this machine has none" in out


def test_paper_profiles_follow_the_authors_task_configs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """hopper_hop (medium) runs the authors' medhard budget with its schedule: 10.1M frames, std over 1M agent
    steps (not DrQ-v2's 500k meant for 3.1M); the dry run says so per task. Local profiles keep theirs."""
    for grid_name in ("critic_i_mode", "bn_modes", "buffer_mixing", "optimizer"):
        trials = [t for t in load_grid(grid_name, "paper").trials if t.task == "hopper_hop"]
        assert trials and all(t.config["num_frames"] == 10_100_000 for t in trials), grid_name
        assert {t.config["stddev_schedule"] for t in trials} == {"linear(1.0,0.1,1000000)"}, grid_name
    local = load_grid("critic_i_mode", "local").trials
    assert {(t.num_frames, t.config["stddev_schedule"]) for t in local} == {(40_000, "linear(1.0,0.1,20000)")}
    code, out, _ = run_cli(
        capsys,
        "--grid",
        "normalization",
        "--profile",
        "paper",
        "--results",
        str(tmp_path / "results"),
        "--dry-run",
        "--host-memory",
        "128GiB",
    )
    assert code == 0
    assert "hopper_hop (medium, ma_bn): frames 10,100,000, stddev_schedule linear(1.0,0.1,1000000)" in out
    assert "cartpole_swingup (easy, ma_bn): frames 5,100,000, stddev_schedule linear(1.0,0.1,100000)" in out
    assert (
        "walker_run (medium, ma_bn): frames 10,100,000, stddev_schedule linear(1.0,0.1,1000000), nstep 1, "
        "batch_size 512"
    ) in out


def test_dry_run_plans_the_store_disk_and_it_fits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path, "g.yaml", grid_dict("plan", seeds=[1, 2], frames=5000, pack=2))
    results = tmp_path / "results"  # not there yet: the free space is the nearest existing parent's
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0
    grid = load_grid(str(path), "local")
    packs = plan_packs(grid, results, grid.trials)
    at_once, _ = concurrency(grid, max(p.memory_bytes for p in packs), packing.local_memory_bytes())
    plan = packing.store_disk_plan(packs, at_once, ray_checkpoints=True)
    one = packing.checkpoint_bytes(grid.trials[0].config)  # full replay (2,500 steps + 2 x 3 + 2 slots) + the rest
    assert one == 2508 * 48 + packing.network_state_bytes(grid.trials[0].config) + packing.CHECKPOINT_FIXED_BYTES
    finished = packing.finished_checkpoint_bytes(grid.trials[0].config)  # its replay dropped (issue #19)
    assert finished == one - 2508 * 48
    running = min(at_once, 2) * 2
    assert plan.total == (
        4 * finished
        + 2 * running * one  # latest and previous of each running trial
        + running * one  # the one each writes
        + (4 + running) * one  # Ray's copies
        + 4 * packing.metrics_bytes(grid.trials[0].config)
    )
    line = next(line for line in out.splitlines() if line.startswith("disk:"))
    assert f"up to {packing.fmt_bytes(plan.total)} ({plan.total:,} bytes) at its peak" in line
    assert "4 trials x 1 kept checkpoint (the latest; every replay dropped when its trial finishes" in line
    assert f"{running} running trials x 2 at full size (latest, previous)" in line
    assert "Ray's copies" in line
    assert f"free on the results filesystem ({tmp_path})" in line
    assert "warning:" not in out
    assert not results.exists()


def test_dry_run_warns_when_the_store_exceeds_the_free_disk(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Paper-like pixel trials (raw frames, replay and checkpoints kept) with so many frames that no filesystem
    holds their checkpoints: a warning with the results path, the planned and the free bytes; still exit 0."""
    huge = grid_dict(
        "huge",
        frames=2 * 10**12,
        base={
            **grid_dict("x")["base"],
            "obs_type": "pixels",
            "hidden_dim": 1024,
            "feature_dim": 50,
            "replay_capacity": 10**12,
        },
    )
    huge["tasks"] = ["hopper_hop"]
    path = write_grid(tmp_path, "huge.yaml", huge)
    results = tmp_path / "results"
    # the host's memory is not what this test is about: say it is large enough
    code, out, _ = run_cli(
        capsys, "--grid", str(path), "--results", str(results), "--dry-run", "--host-memory", "10000000T"
    )
    assert code == 0, out
    grid = load_grid(str(path), "local")
    config = grid.trials[0].config
    assert packing.replay_transitions(config) == 10**12  # replay_capacity (2e12 frames at action repeat 2)
    assert packing.checkpoint_bytes(config) > 20 * 10**15  # 21,208 B per transition
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    planned = packing.store_disk_plan(plan_packs(grid, results, grid.trials), 1, True).total
    assert f"warning: the planned store does not fit: {results} needs up to " in warning
    match = re.search(r"needs up to ([\d,]+) bytes .* has ([\d,]+) bytes free", warning)
    assert match and int(match.group(1).replace(",", "")) >= planned
    free = int(match.group(2).replace(",", ""))
    assert abs(free - shutil.disk_usage(tmp_path).free) < 0.05 * shutil.disk_usage(tmp_path).total
    assert f"measured at {tmp_path}" in warning
    assert "dry run: nothing launched" in out and not results.exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "task": "cartpole_swingup",
            "obs_type": "states",
            "hidden_dim": 32,
            "feature_dim": 16,
            "actor_norm": "layer_norm",
            "critic_norm": "layer_norm",
        },
        {"task": "walker_walk", "obs_type": "states", "hidden_dim": 256},
        {
            "task": "hopper_hop",
            "obs_type": "pixels",
            "hidden_dim": 256,
            "encoder_norm": "batch_norm",
            "actor_norm": "batch_norm",
            "critic_norm": "batch_norm",
        },
    ],
    ids=["states-ln", "states-bn", "pixels-encoder-bn"],
)
def test_planned_network_state_is_the_agents(overrides: dict) -> None:
    """The disk plan counts the networks from the architecture; the real agent has exactly those numbers."""
    import torch

    from agent.drqv2 import NETWORKS, DrQV2Agent
    from contract.config import build_config

    config = build_config(overrides)
    state_dim, action_dim, _ = tasks.task_dims(config.task)
    shape = (3 * config.frame_stack, 84, 84) if config.obs_type == "pixels" else (state_dim,)
    agent = DrQV2Agent(config, shape, action_dim, torch.device("cpu"))
    state = agent.member_state_dict(0)
    saved = sum(value.numel() for name in NETWORKS for value in state[name].values())
    trained = sum(p.numel() for name in ("actor", "critic", "encoder") for p in getattr(agent, name).parameters())
    assert packing.network_numbers(config.to_dict()) == (saved, trained)
