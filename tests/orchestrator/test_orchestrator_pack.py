"""Packed trials (issue #9): K trials in one process as one Ray trial; placement only, never identity.

Grid and dry-run tests need no Ray.  The end-to-end tests run real tiny packs on the
module's local Ray (``local_ray``) through ``agent.train.run_pack``: a packed sweep, a
re-run with another pack size that launches nothing, an extension run unpacked whose
files match the packed members', and a partly done pack whose rerun trains only its
unfinished member.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from orch_helpers import grid_dict, run_cli, trial_dirs, write_grid

from contract import store, tasks
from contract.store import TrialStatus, read_status, write_status
from orchestrator import packing
from orchestrator.grid import load_grid
from orchestrator.wandb_offline import read_run

ROW = r"\s+\d+\s+[0-9a-f]{12}\s"


def _rows(out: str) -> dict[str, str]:
    """trial id -> its dry-run table row."""
    import re

    return {line.split()[1]: line for line in out.splitlines() if re.match(ROW, line)}


def _pack_column(row: str) -> str:
    # columns: #, trial_id, cell, task, seed, frames, pack, resources..., state
    return row.split("cartpole_swingup", 1)[1].split()[2]


def _status(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "status.json").read_text())


def _metric_frames(directory: Path) -> list[int]:
    with (directory / "metrics.csv").open(newline="") as handle:
        return [int(row["frame"]) for row in csv.DictReader(handle)]


def _files(directory: Path) -> set[str]:
    """A trial directory's entries, as a single trial's would be (checkpoint contents included)."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if "wandb" not in p.parts}


# ------------------------------------------------------------------ the grid key
BAD_PACKS = [
    ("top-zero", "pack", 0),
    ("top-negative", "pack", -1),
    ("top-text", "pack", "x"),
    ("top-float", "pack", 2.5),
    ("profile-zero", "profiles.local.pack", 0),
    ("profile-text", "profiles.paper.pack", "x"),
]


@pytest.mark.parametrize("case", BAD_PACKS, ids=[c[0] for c in BAD_PACKS])
def test_bad_pack_value_is_rejected(case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, key_path, value = case
    grid = grid_dict("bad")
    if key_path == "pack":
        grid["pack"] = value
    else:
        grid["profiles"] = {"local": {}, "paper": {}}
        grid["profiles"][key_path.split(".")[1]]["pack"] = value
    path = write_grid(tmp_path, "bad.yaml", grid)
    results = tmp_path / "results"
    code, out, err = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 2, out + err
    assert f"{path}: {key_path}: {value!r}: expected a positive integer" in err, err
    assert "allowed: 1, 2, 3, ...; 1 = no packing" in err and "nothing was launched" in err
    assert not results.exists()


def test_bad_pack_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path, "g.yaml", grid_dict("g"))
    with pytest.raises(SystemExit) as info:
        run_cli(capsys, "--grid", str(path), "--results", str(tmp_path / "r"), "--pack", "0", "--dry-run")
    assert info.value.code == 2
    assert "--pack 0: expected a positive integer (allowed: 1, 2, 3, ...; 1 = no packing)" in capsys.readouterr().err


def test_pack_never_changes_trial_or_cell_ids(tmp_path: Path) -> None:
    plain = load_grid(str(write_grid(tmp_path, "a.yaml", grid_dict("g", seeds=[1, 2]))), "local")
    packed_grid = grid_dict("g", seeds=[1, 2], pack=3, profiles={"local": {"pack": 2}, "paper": {}})
    packed = load_grid(str(write_grid(tmp_path, "b.yaml", packed_grid)), "local")
    top = load_grid(str(write_grid(tmp_path, "b.yaml", packed_grid)), "paper")
    assert (plain.pack, packed.pack, top.pack) == (1, 2, 3)
    assert (packed.pack_source, top.pack_source, plain.pack_source) == ("profiles.local.pack", "pack", "")
    for grid in (packed, top):
        assert [t.trial_id for t in grid.trials] == [t.trial_id for t in plain.trials]
        assert [t.cell_id for t in grid.trials] == [t.cell_id for t in plain.trials]
        assert [t.config for t in grid.trials] == [t.config for t in plain.trials]


def test_every_paper_profile_sets_a_pack_that_fits_128_gib() -> None:
    for name in (
        "critic_i_mode",
        "bn_modes",
        "buffer_mixing",
        "target_bn_stats",
        "learning_rate",
        "optimizer",
        "exploration",
        "normalization",
    ):
        grid = load_grid(name, "paper")
        assert grid.pack > 1, name
        configs = [t.config for t in grid.trials]
        assert all(c["frame_codec"] == "lz4" for c in configs)  # the plan counts lz4 frames (with its margin)
        worst = max(configs, key=packing.member_bytes)
        assert packing.pack_bytes([worst] * grid.pack) <= 128 * packing.GiB, name
        assert load_grid(name, "local").pack == 1  # on 2 cores a pack saves memory, not time (bench)


# ------------------------------------------------------------------ grouping and memory
def test_packs_group_by_signature_and_resume_frame(tmp_path: Path) -> None:
    grid = grid_dict(
        "g",
        modes=["TTTTT", "TTETT", "ETETT"],
        seeds=[1, 2],
        cells=[{"name": "Origin", "actor_norm": "none", "critic_norm": "none"}],
    )
    loaded = load_grid(str(write_grid(tmp_path, "g.yaml", grid)), "local")
    results = tmp_path / "results"
    resuming = loaded.trials[1]  # TTETT seed 1 has a checkpoint at frame 1000
    marker = store.trial_dir(results, "g", resuming.trial_id) / "checkpoint" / store.CHECKPOINT_META
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"frame": 1000}))
    frame = {t.trial_id: store.resume_frame(store.trial_dir(results, "g", t.trial_id)) for t in loaded.trials}
    packs = packing.make_packs(loaded.trials, 2, lambda t: frame[t.trial_id])
    by_member = {m.trial_id: p for p in packs for m in p.members}
    assert [p.number for p in packs] == list(range(1, len(packs) + 1))
    assert sorted(by_member) == sorted(t.trial_id for t in loaded.trials)
    for p in packs:
        assert len({packing.signature(m.config) for m in p.members}) == 1 and p.size <= 2
        assert {frame[m.trial_id] for m in p.members} == {p.resume_frame}
    assert by_member[resuming.trial_id].members == (resuming,)  # alone: nobody else resumes from 1000
    origins = [t for t in loaded.trials if t.config["actor_norm"] == "none"]
    assert by_member[origins[0].trial_id] is by_member[origins[1].trial_id]  # Origin's two seeds together
    assert all(m.config["actor_norm"] == "none" for m in by_member[origins[0].trial_id].members)
    # deterministic, and balanced: n trials in ceil(n / K) packs whose sizes differ by at most one
    again = packing.make_packs(loaded.trials, 2, lambda t: frame[t.trial_id])
    assert [p.trial_ids for p in again] == [p.trial_ids for p in packs]
    bn = [t for t in loaded.trials if t.config["actor_norm"] == "batch_norm"]
    assert [p.size for p in packing.make_packs(bn[:5], 3, lambda t: 0)] == [3, 2]
    assert [p.size for p in packing.make_packs(bn[:5], 4, lambda t: 0)] == [3, 2]  # not 4 + 1
    assert packing.pack_id(["b", "a"]) == packing.pack_id(["a", "b"]) and packing.pack_id(["a"]) == "a"


def test_planned_compressed_replay_covers_a_real_one() -> None:
    """The memory plan for lz4 frames is at least what a real lz4 replay of real rendered frames holds."""
    import numpy as np

    from agent.replay import ReplayBuffer
    from envs import make_env

    env = make_env("cartpole_swingup", "pixels", seed=0, action_repeat=2, frame_stack=3)
    replay = ReplayBuffer(400, env.frame_shape, np.uint8, 3, env.action_dim, 3, 0.99, seed=0, frame_codec="lz4")
    rng = np.random.default_rng(0)
    step = env.reset()
    replay.add(step.frame, None, 0.0, 1.0, first=True, last=False)
    for _ in range(300):
        action = rng.uniform(-1, 1, env.action_dim).astype(np.float32)
        step = env.step(action)
        replay.add(step.frame, action, step.reward, step.discount, first=False, last=step.last)
    env.close()
    config = {"task": "cartpole_swingup", "obs_type": "pixels", "frame_codec": "lz4"}
    assert replay.bytes_per_transition <= packing.replay_bytes_per_transition(config)


def test_replay_bytes_per_transition() -> None:
    pixels = {
        "task": "cartpole_swingup",
        "obs_type": "pixels",
        "num_frames": 10_000_000,
        "action_repeat": 2,
        "frame_stack": 3,
        "replay_capacity": 1_000_000,
    }
    assert packing.replay_bytes_per_transition(pixels) == 21_196  # 3x84x84 + 1 action + reward etc.
    assert packing.replay_bytes_per_transition({**pixels, "task": "hopper_hop"}) == 21_208
    planned = packing.replay_bytes_per_transition({**pixels, "frame_codec": "lz4"})
    assert planned == packing.compressed_pixel_bytes("cartpole_swingup") + 4 + 24 < 21_196 // 10
    assert packing.compressed_pixel_bytes("some_new_task") == 3 * 84 * 84 // 2  # unmeasured: half a raw frame
    states = {**pixels, "obs_type": "states", "frame_stack": 1}
    assert packing.replay_bytes_per_transition(states) == 5 * 4 + 1 * 4 + 24  # 48 B, as bench measures
    unknown = packing.replay_bytes_per_transition({**states, "task": "some_new_task"})
    assert unknown == tasks.STATE_DIM_BOUND * 4 + tasks.ACTION_DIM_BOUND * 4 + 24  # a safe upper bound
    assert packing.replay_transitions(pixels) == 1_000_000
    assert packing.replay_transitions({**pixels, "num_frames": 2000}) == 1000 + 2 * 3 + 2  # what the worker allocates
    assert packing.parse_size("128GiB") == 128 * packing.GiB == packing.parse_size("128g")


# ------------------------------------------------------------------ dry runs
def test_dry_run_shows_the_packs_and_the_packed_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_grid(
        tmp_path, "g.yaml", grid_dict("plan", modes=["TTTTT", "TTETT", "ETETT"], seeds=[1, 2], frames=5000, pack=4)
    )
    results = tmp_path / "results"
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0, out
    rows = _rows(out)
    assert len(rows) == 6
    assert sorted(_pack_column(r) for r in rows.values()) == ["1", "1", "1", "2", "2", "2"]  # 6 -> 3 + 3
    assert f"6 trials to run in 2 packs of at most 4 (2 x 3 members; `pack: 4` in {path})" in out
    assert "pack_id" in out and out.count("pack-") == 2  # the pack table
    assert (
        "no packed measurement for K=3 on CPU (states, hidden 32): assuming aggregate rate = per-trial rate "
        "x 1, i.e. no gain" in out
    )
    assert "2 pack(s) at a time" in out and "total pack time" in out
    assert "memory: a pack of 3 needs up to" in out and "fits this machine" in out
    assert not results.exists()

    # --pack overrides the grid; a measured speed-up is used and said to be measured
    monkeypatch.setitem(packing.PACKED_SPEEDUPS, ("states", 32, "cpu", 2, "none", "in_process"), 1.5)
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run", "--pack", "2")
    assert code == 0
    assert "6 trials to run in 3 packs of at most 2 (3 x 2 members; --pack 2)" in out
    assert "packs of 2: 525 frames/s per member (measured aggregate speed-up x1.5)" in out  # 700 x 1.5 / 2
    assert "no packed measurement" not in out


def test_dry_run_uses_rates_measured_in_packs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_grid(tmp_path, "g.yaml", grid_dict("plan", seeds=[1, 2, 3], frames=5000, pack=2))
    results = tmp_path / "results"
    grid = load_grid(str(path), "local")
    done = grid.trials[:2]  # measured in one pack of 2 at 150 frames/s per member
    for trial in done:
        directory = store.trial_dir(results, trial.grid, trial.trial_id)
        directory.mkdir(parents=True)
        (directory / "config.yaml").write_text(yaml.safe_dump(trial.config))
        write_status(directory, TrialStatus("running"))  # along the status machine, as the worker writes it
        write_status(directory, TrialStatus("completed", frame=trial.num_frames, wall_time_s=trial.num_frames / 150.0))
        store.write_trial_meta(
            directory,
            {
                **trial.meta(),
                "pack_id": packing.pack_id([t.trial_id for t in done]),
                "pack_size": 2,
                "pack_members": [t.trial_id for t in done],
            },
        )
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0
    assert "6 trials; 2 done, 4 to run" in out
    assert "150 frames/s per member of a pack of 2, median of 2 finished trials" in out
    assert all(_pack_column(rows) == "-" for tid, rows in _rows(out).items() if tid in {t.trial_id for t in done})


def test_dry_run_refuses_a_pack_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # pixels with a huge replay: 10M transitions x 21,196 B = 197 GiB per member; nothing is allocated
    huge = grid_dict("huge", frames=40_000_000, pack=2)
    huge["base"].update(obs_type="pixels", replay_capacity=10_000_000)
    path = write_grid(tmp_path, "huge.yaml", huge)
    results = tmp_path / "results"
    code, out, err = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 2 and not out.strip(), out
    message = err.strip()
    assert message.count("\n") == 0  # one message
    need = packing.pack_bytes([t.config for t in load_grid(str(path), "local").trials])
    assert (
        f"grid {path}, profile local: `pack: 2` in {path} does not fit: a pack of 2 trials needs an estimated "
        f"{packing.fmt_bytes(need)} ({need:,} bytes" in message
    )
    memory = packing.local_memory_bytes()
    assert f"but this machine has {packing.fmt_bytes(memory)} of memory ({memory:,} bytes)" in message
    assert "not even one of these trials fits" in message and "nothing was launched" in message
    assert not results.exists()

    # a pack that fits this machine but not the host named with --host-memory
    small = grid_dict("small", frames=400_000, pack=2)
    small["base"].update(obs_type="pixels")
    path = write_grid(tmp_path, "small.yaml", small)
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0 and "fits this machine" in out
    code, _, err = run_cli(
        capsys, "--grid", str(path), "--results", str(results), "--dry-run", "--host-memory", "10GiB"
    )
    assert code == 2
    assert "but the host given by --host-memory has 10.0 GiB of memory" in err
    assert f"at most 1 of these trials fit one process: set `pack: 1` in {path} or pass --pack 1" in err


def test_a_real_sweep_refuses_a_pack_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    huge = grid_dict("huge", frames=40_000_000, pack=2)
    huge["base"].update(obs_type="pixels", replay_capacity=10_000_000)
    path = write_grid(tmp_path, "huge.yaml", huge)
    results = tmp_path / "results"
    code, out, err = run_cli(capsys, "--grid", str(path), "--results", str(results), "--no-wandb", "--no-figures")
    assert code == 2
    assert "does not fit" in err and "this machine has" in err and "nothing was launched" in err
    assert not results.exists()  # not even the grid directory or its lock: Ray was never started


# ------------------------------------------------------------------ end to end on a real local Ray
@pytest.fixture(scope="module")
def packed_run(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny grid of 4 trials (2 modes x 2 seeds) run as 2 packs of 2, with offline W&B."""
    root = tmp_path_factory.mktemp("packed")
    wandb_dir = root / "wandb_dir"
    wandb_dir.mkdir()
    grid_path = write_grid(root, "packed.yaml", grid_dict("packed", seeds=[1, 2], pack=2))
    from orchestrator.sweep import main

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(wandb_dir))
        code = main(
            ["--grid", str(grid_path), "--results", str(root / "results"), "--no-figures", "--progress-every", "5"]
        )
    return {
        "root": root,
        "results": root / "results",
        "grid_path": grid_path,
        "wandb_dir": wandb_dir,
        "code": code,
        "out": out.getvalue(),
    }


def test_packed_sweep_completes_every_member(packed_run: dict[str, Any]) -> None:
    out = packed_run["out"]
    assert packed_run["code"] == 0, out
    assert "2 packs of at most 2 trials (4 trials)" in out
    assert "4 trials: 4 completed, 0 diverged, 0 failed, 0 unfinished" in out and "4 launched" in out
    assert out.count("  start    ") == 4 and "completed [4/4]" in out  # the live view, per member trial
    dirs = trial_dirs(packed_run["results"], "packed")
    assert len(dirs) == 4
    launches = list((packed_run["results"] / "packed" / store.RAY_DIR).glob("*.launch.json"))
    packs = json.loads(launches[0].read_text())["packs"]
    assert sorted(len(m) for m in packs.values()) == [2, 2]
    for directory in dirs:
        meta = json.loads((directory / "trial.json").read_text())
        config = yaml.safe_load((directory / "config.yaml").read_text())
        assert store.trial_id(config) == directory.name == meta["trial_id"]
        assert meta["pack_size"] == 2 and directory.name in meta["pack_members"]
        assert packs[meta["pack_id"]] == meta["pack_members"]
        status = _status(directory)
        assert status["status"] == "completed" and status["frame"] == 2000
        assert _metric_frames(directory)[-1] == 2000
        assert store.checkpoint_frame(directory) == 1000  # the frame marker the planner reads
    # Ray's checkpoint of a pack: one subdirectory per member trial id
    checkpoints = sorted((packed_run["results"] / "packed" / store.RAY_DIR).glob("sweep-*/pack-*/checkpoint_*"))
    assert len(checkpoints) == 2
    for checkpoint in checkpoints:
        index = json.loads((checkpoint / "pack.json").read_text())
        assert sorted(index["frames"]) == sorted(packs[checkpoint.parent.name])
        assert all((checkpoint / tid / store.CHECKPOINT_META).exists() for tid in index["frames"])


def test_packed_members_have_one_wandb_run_each(packed_run: dict[str, Any]) -> None:
    runs = sorted((packed_run["wandb_dir"] / "wandb").glob("offline-run-*"))
    assert len(runs) == 4
    dirs = {d.name: d for d in trial_dirs(packed_run["results"], "packed")}
    for run_dir in runs:
        run = read_run(run_dir)
        directory = dirs[run["config"]["trial_id"]]
        assert run["run"]["run_id"] == f"packed-{directory.name}" and run["summary"]["status"] == "completed"
        logged = [row["frame"] for row in run["history"]]
        assert logged == _metric_frames(directory)  # this member's rows only, all of them


def test_rerun_with_another_pack_size_launches_nothing(
    packed_run: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    dirs = trial_dirs(packed_run["results"], "packed")
    before = {d.name: (d / "status.json").stat().st_mtime_ns for d in dirs}
    for pack in ("1", "3"):
        code, out, _ = run_cli(
            capsys,
            "--grid",
            str(packed_run["grid_path"]),
            "--results",
            str(packed_run["results"]),
            "--no-figures",
            "--no-wandb",
            "--pack",
            pack,
        )
        assert code == 0
        assert "4 already done, 0 to run" in out and "0 launched, 4 already done and skipped" in out
        assert "starting Ray experiment" not in out
    assert {d.name: (d / "status.json").stat().st_mtime_ns for d in dirs} == before


def test_unpacked_extension_matches_the_packed_members(
    packed_run: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    packed = trial_dirs(packed_run["results"], "packed")
    extended = write_grid(
        packed_run["root"], "extended.yaml", grid_dict("packed", modes=["TTTTT", "TTETT", "ETETT"], seeds=[1, 2])
    )  # pack 1
    code, out, _ = run_cli(
        capsys, "--grid", str(extended), "--results", str(packed_run["results"]), "--no-figures", "--no-wandb"
    )
    assert code == 0, out
    assert "6 trials, 4 already done, 2 to run" in out and "2 launched" in out
    new = [d for d in trial_dirs(packed_run["results"], "packed") if d not in packed]
    assert len(new) == 2
    for single in new:
        assert json.loads((single / "trial.json").read_text())["pack_size"] == 1
        for member in packed:  # a packed member holds exactly a single trial's files
            assert _files(member) == _files(single)
            assert _metric_frames(member) == _metric_frames(single)
            with (member / "metrics.csv").open() as a, (single / "metrics.csv").open() as b:
                assert a.readline() == b.readline()  # same columns


def test_partly_done_pack_reruns_only_its_unfinished_member(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_grid(tmp_path, "part.yaml", grid_dict("part", pack=2))
    results = tmp_path / "results"
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--no-figures", "--no-wandb")
    assert code == 0 and "1 pack of at most 2 trials (2 trials)" in out, out
    first, second = trial_dirs(results, "part")
    # the pack was stopped after `second` had finished: `first` is unfinished, from its checkpoint at 1000
    status = read_status(first)
    assert status is not None
    # what a pack killed mid-run leaves on disk (written as a file: no writer moves a finished trial back)
    (first / store.STATUS_FILE).write_text(json.dumps(replace(status, state="running", frame=1000).to_json()))
    kept = [f for f in _metric_frames(first) if f <= 1000]
    before = (second / "status.json").stat().st_mtime_ns
    code, out, _ = run_cli(
        capsys, "--grid", str(path), "--results", str(results), "--no-figures", "--no-wandb", "--dry-run"
    )
    assert code == 0 and "running @ 1,000" in out and "1 to run (1 of them resume from a checkpoint)" in out
    code, out, _ = run_cli(capsys, "--grid", str(path), "--results", str(results), "--no-figures", "--no-wandb")
    assert code == 0, out
    assert "1 already done, 1 to run" in out and "1 launched, 1 already done and skipped" in out
    assert (second / "status.json").stat().st_mtime_ns == before  # the finished member was not touched
    resumed = _status(first)
    assert resumed["status"] == "completed" and resumed["resumed_from_frame"] == 1000
    meta = json.loads((first / "trial.json").read_text())
    assert meta["pack_size"] == 1 and meta["pack_members"] == [first.name]
    frames = _metric_frames(first)
    assert frames[: len(kept)] == kept and frames == sorted(frames) and frames[-1] == 2000


def _write_checkpoint(directory: Path, label: str, frame: int) -> None:
    """A real checkpoint (agent.checkpoint format) holding just a label, moved to ``directory``."""
    from agent import checkpoint

    staging = directory.parent / f".{directory.name}.staging"
    staging.mkdir(parents=True)  # save() never makes a trial directory (issue #19)
    checkpoint.save(staging, {"label": label, "frame": frame, "step": frame // 2}, frame, frame // 2)
    (staging / checkpoint.LATEST).rename(directory)
    shutil.rmtree(staging)


def _label(directory: Path) -> str:
    from agent import checkpoint

    return checkpoint.load(directory)["label"]


def test_a_members_copy_is_taken_from_the_packs_ray_checkpoint(tmp_path: Path) -> None:
    """Ray's checkpoint of a pack holds one directory per member; each member takes its own when newer."""
    from ray import tune

    from orchestrator.trainable import PACK_CHECKPOINT_FILE, restore_ray_checkpoint

    ray_copy = tmp_path / "ray_checkpoint"
    ray_copy.mkdir()
    for tid, frame in (("aaaaaaaaaaaa", 3000), ("bbbbbbbbbbbb", 1000)):
        _write_checkpoint(ray_copy / tid, f"{tid} at {frame}", frame)
    (ray_copy / PACK_CHECKPOINT_FILE).write_text(json.dumps({"frames": {"aaaaaaaaaaaa": 3000, "bbbbbbbbbbbb": 1000}}))
    checkpoint = tune.Checkpoint.from_directory(str(ray_copy))
    missing, newer, absent = tmp_path / "aaaaaaaaaaaa", tmp_path / "bbbbbbbbbbbb", tmp_path / "cccccccccccc"
    for directory in (missing, newer, absent):
        directory.mkdir()
    _write_checkpoint(newer / "checkpoint", "store at 2000", 2000)
    assert restore_ray_checkpoint(missing, missing.name, checkpoint)  # the store has none: Ray's is used
    assert _label(missing / "checkpoint") == "aaaaaaaaaaaa at 3000"
    assert store.checkpoint_frame(missing) == 3000
    assert not restore_ray_checkpoint(newer, newer.name, checkpoint)  # the store's is newer: kept
    assert _label(newer / "checkpoint") == "store at 2000"
    assert not restore_ray_checkpoint(absent, absent.name, checkpoint)  # not in this pack's checkpoint
    assert not (absent / "checkpoint").exists()
    # a checkpoint Ray kept from before packing (one trial's files at the top) still restores a lone trial
    legacy = tmp_path / "legacy"
    _write_checkpoint(legacy, "legacy at 1000", 1000)
    assert restore_ray_checkpoint(absent, absent.name, tune.Checkpoint.from_directory(str(legacy)), single=True)
    assert _label(absent / "checkpoint") == "legacy at 1000"
