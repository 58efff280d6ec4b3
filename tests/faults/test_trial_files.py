"""A trial's own files on a shared, lying or moving filesystem (issue #19, cases 3, 4, 5, 6 and 10): real tiny
trials on a real dm_control task; each resumed trial is compared with an uninterrupted run of the same config."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import store
from agent.config import build_config
from agent.train import run_trial
from tests.agent.test_train import TINY_STATES

TINY = {**TINY_STATES, "num_frames": 2000}


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
