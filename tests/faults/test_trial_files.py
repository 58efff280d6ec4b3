"""A trial's own files on a shared, lying or moving filesystem (issue #19, cases 3, 4, 5, 6 and 10): real tiny
trials on a real dm_control task; each resumed trial is compared with an uninterrupted run of the same config."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from agent.train import run_trial
from contract import store
from contract.config import build_config
from tests.agent.test_train import TINY_STATES

TINY = {**TINY_STATES, "num_frames": 2000}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The metrics of an uninterrupted run of TINY: what every recovered trial must reproduce."""
    from tests.faults.test_checkpoint_faults import metrics

    out = tmp_path_factory.mktemp("reference")
    assert run_trial(build_config(TINY), out).state == store.COMPLETED
    return metrics(out)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_store_files_honour_the_umask(tmp_path: Path, umask_022: None) -> None:
    """Case 6: every file of a trial (the atomic writes included) is readable by the group and others under
    umask 022, as any file the user creates, so a colleague's analysis and planner can read the store."""
    out = tmp_path / "trial"
    assert run_trial(build_config(TINY), out).state == store.COMPLETED
    store.write_trial_meta(out, {"grid": "g", "trial_id": out.name})
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {store.CONFIG_FILE, store.STATUS_FILE, store.METRICS_FILE, store.TRIAL_FILE}
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(mode == 0o644 for mode in modes.values()), modes


def test_metrics_are_durable_before_each_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 5: a power loss keeps what was fsynced.  Before each checkpoint's manifest reaches the disk,
    metrics.csv has been fsynced with every row up to that checkpoint's frame, so no checkpoint on disk can be
    newer than the metrics (a resumed trial would otherwise finish with a silent gap)."""
    real_fsync = os.fsync
    synced: list[tuple[str, int]] = []  # (path, size at the fsync)

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((path, os.fstat(fd).st_size))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "trial"
    config = build_config({**TINY, "num_frames": 4000})
    assert run_trial(config, out).state == store.COMPLETED
    manifests = [i for i, (path, _) in enumerate(synced) if path.endswith(f"checkpoint.tmp/{'manifest.json'}")]
    assert len(manifests) == 3  # frames 1000, 2000 and 3000 (episode ends)
    rows = (out / store.METRICS_FILE).read_text().splitlines()
    for number, index in enumerate(manifests, 1):
        frame = 1000 * number
        before = [size for path, size in synced[:index] if path == str(out / store.METRICS_FILE)]
        assert before, f"metrics.csv was not fsynced before the checkpoint of frame {frame}"
        needed = [row for row in rows[1:] if int(row.split(",")[0]) <= frame]
        assert before[-1] >= len("\n".join([rows[0], *needed])) + 1, f"frame {frame}: rows missing from the sync"


# ---------------------------------------------------------- case 3: a checkpoint is adopted by its own trial only
def _interrupted(out: Path, overrides: dict | None = None, at: int = 1500) -> None:
    from tests.faults.test_checkpoint_faults import StopAt

    with pytest.raises(SystemExit):
        run_trial(build_config({**TINY, **(overrides or {})}), out, sinks=[StopAt(at)])
    assert store.read_status(out).state == store.INTERRUPTED


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_agent_train_refuses_a_directory_of_another_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Case 3: ``agent.train ... out=X`` where X holds an interrupted trial of a config differing in bn_mode:
    one line naming X and the key, exit 2, X untouched (before, it resumed the other config's checkpoint)."""
    from agent.train import main

    out = tmp_path / "runs" / "cartpole_swingup-states-seed1"
    _interrupted(out, {"bn_mode": "TTTTT", "actor_norm": "batch_norm", "critic_norm": "batch_norm"})
    before = _snapshot(out)
    args = [f"{k}={v}" for k, v in TINY.items()] + ["actor_norm=batch_norm", "critic_norm=batch_norm"]
    assert main([*args, "bn_mode=TTETT", f"out={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "another trial's results" in err[0], err
    assert "bn_mode: 'TTTTT' there, 'TTETT' here" in err[0]
    assert _snapshot(out) == before


def test_a_checkpoint_of_another_config_is_set_aside_and_the_trial_starts_fresh(
    tmp_path: Path, reference: pd.DataFrame
) -> None:
    """Case 3: a checkpoint copied into the directory of another config (its config.yaml is right) says whose
    it is: it is set aside with one note and the trial runs from frame 0, equal to an uninterrupted run."""
    import shutil

    from agent import checkpoint
    from tests.faults.test_checkpoint_faults import metrics

    other, mine = tmp_path / "other", tmp_path / "mine"
    _interrupted(other, {"lr": 3e-4})
    _interrupted(mine)
    shutil.rmtree(mine / checkpoint.LATEST)
    shutil.rmtree(mine / checkpoint.PREVIOUS, ignore_errors=True)
    shutil.copytree(other / checkpoint.LATEST, mine / checkpoint.LATEST)
    final = run_trial(build_config(TINY), mine)
    assert final.state == store.COMPLETED and final.resumed_from_frame is None
    [fallback] = final.checkpoint_fallbacks
    assert "checkpoint of another config" in fallback["note"] and "restarts from frame 0" in fallback["note"]
    assert (mine / checkpoint.DAMAGED).is_dir()
    pd.testing.assert_frame_equal(metrics(mine), reference)


def test_a_checkpoint_of_another_state_layout_is_not_resumable(tmp_path: Path) -> None:
    """Case 3: the same trial with another frame_codec (a placement key: same trial id) cannot load the
    replay it checkpointed; its manifest says so and the checkpoint is passed over, not failed on."""
    from agent import checkpoint

    config = build_config(TINY).to_dict()
    checkpoint.save(tmp_path, {"frame": 1000, "step": 500}, 1000, 500, owner=store.checkpoint_owner(config))
    assert checkpoint.load_latest(tmp_path, store.checkpoint_owner(config)).state is not None
    changed = store.checkpoint_owner({**config, "frame_codec": "lz4"})
    assert changed["trial_id"] == store.trial_id(config)
    found = checkpoint.load_latest(tmp_path, changed)
    assert found.state is None and "frame_codec='none', this run 'lz4'" in found.notes[0]
    assert "not resumable" in found.notes[0] and (tmp_path / checkpoint.DAMAGED).is_dir()


def test_a_verified_checkpoint_that_does_not_fit_fails_once_then_runs_fresh(tmp_path: Path) -> None:
    """Case 3: a checkpoint from before manifests said whose they are, of other network sizes: verified, but
    loading it fails.  The trial fails once with one line saying so and the checkpoint is set aside; the rerun
    starts from frame 0 and completes (before, every rerun failed the same way)."""
    import json
    import shutil

    from agent import checkpoint

    other, mine = tmp_path / "other", tmp_path / "mine"
    _interrupted(other, {"hidden_dim": 24})
    _interrupted(mine)
    shutil.rmtree(mine / checkpoint.LATEST)
    shutil.copytree(other / checkpoint.LATEST, mine / checkpoint.LATEST)
    manifest = json.loads((mine / checkpoint.LATEST / checkpoint.MANIFEST_FILE).read_text())
    del manifest["owner"]  # as written before issue #19
    (mine / checkpoint.LATEST / checkpoint.MANIFEST_FILE).write_text(json.dumps(manifest))
    first = run_trial(build_config(TINY), mine)
    assert first.state == store.FAILED and "does not fit this config" in (first.error or "")
    assert "next run starts from frame 0" in first.error and "\n" not in first.error
    again = run_trial(build_config(TINY), mine)
    assert again.state == store.COMPLETED and again.resumed_from_frame is None


# ---------------------------------------------------------- case 4: a trial directory that moves while it runs
class MoveAt:
    """A sink that renames (or deletes) the trial directory once the trial logs ``frame``: someone else's hand."""

    def __init__(self, out: Path, frame: int, delete: bool):
        self.out, self.frame, self.delete, self.done = out, frame, delete, False

    def log(self, frame: int, metrics: object) -> None:
        if frame >= self.frame and not self.done:
            self.done = True
            if self.delete:
                import shutil

                shutil.rmtree(self.out)
            else:
                self.out.rename(self.out.with_name("moved"))

    def checkpoint(self, frame: int, path: Path) -> None:
        pass

    def close(self, status: object) -> None:
        pass


@pytest.mark.parametrize("delete", [False, True], ids=["renamed", "deleted"])
def test_a_trial_directory_that_vanishes_is_never_made_again_nor_completed(
    tmp_path: Path, delete: bool, reference: pd.DataFrame
) -> None:
    """Case 4: the trial's next write refuses in one line (never recreating the directory, never writing into
    the moved one), nothing says completed, and the rerun runs the trial afresh in its place."""
    from tests.faults.test_checkpoint_faults import metrics

    out = tmp_path / "trial"
    final = run_trial(build_config(TINY), out, sinks=[MoveAt(out, 1500, delete)])
    assert final.state == store.INTERRUPTED and final.store_error, final
    assert "moved or deleted while the trial ran" in (final.error or "") and str(out) in final.error
    assert not out.exists()
    if not delete:
        moved = tmp_path / "moved"
        assert store.read_status(moved).state == store.RUNNING  # as it was when it moved: never completed
        assert max(int(r["frame"]) for r in store.read_metric_rows(moved / store.METRICS_FILE)) == 1500
    again = run_trial(build_config(TINY), out)
    assert again.state == store.COMPLETED and again.resumed_from_frame is None
    pd.testing.assert_frame_equal(metrics(out), reference)


# ---------------------------------------------------------- case 10: a finished trial drops its replay
@pytest.mark.parametrize("keep_replay", [False, True])
def test_a_finished_trial_keeps_its_weights_and_drops_its_replay_unless_asked(
    tmp_path: Path, keep_replay: bool
) -> None:
    """Case 10: the finished trial's one checkpoint holds its networks, statistics and counters, verified and
    loadable; its replay file is gone unless keep_replay (a placement key: the trial id is the same)."""
    from agent import checkpoint

    out = tmp_path / "trial"
    config = build_config({**TINY, "keep_replay": keep_replay})
    assert run_trial(config, out).state == store.COMPLETED
    latest = out / checkpoint.LATEST
    assert (latest / checkpoint.REPLAY_FILE).exists() == keep_replay
    assert not (out / checkpoint.PREVIOUS).exists()
    state = checkpoint.load(latest)
    assert state["agent"] and state["step"] and state["coverage"] is not None
    assert (state["replay"] is not None) == keep_replay
    assert store.trial_id(config.to_dict()) == store.trial_id(build_config(TINY).to_dict())


def test_the_disk_plan_counts_finished_trials_without_their_replay() -> None:
    """Case 10: the paper's hopper_hop pixel trial keeps ~4 GiB of replay in its checkpoint while it runs; a
    finished one keeps a few MiB, or all of it with keep_replay."""
    from orchestrator import packing

    config = build_config(
        {"task": "hopper_hop", "obs_type": "pixels", "num_frames": 3_100_000, "replay_capacity": 1_000_000}
    ).to_dict()
    assert packing.checkpoint_bytes(config) > 4 * 1024**3
    assert packing.finished_checkpoint_bytes(config) < 128 * 1024**2  # networks and optimizer state
    assert packing.finished_checkpoint_bytes({**config, "keep_replay": True}) == packing.checkpoint_bytes(config)
