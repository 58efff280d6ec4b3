"""A disk that lies (issue #19): an error (ENOSPC, EIO) injected at the k-th write of a checkpoint, a status and
a metrics write, for every k, as SQLite's crash tests do.  The real writers write real files; the injection wraps
the file objects they open (and ``os.fsync``) in this process, and a failing write first writes half its data,
as a disk that fills in mid-write does.  After each fault: the writer raised (never a silent success), nothing
written before is lost, and the store still loads."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent import checkpoint
from agent.sinks import DiskSink, write_config
from contract import store
from contract.store import RUNNING, StoreWriteError, TrialStatus


class Faults:
    """Counts the writes into ``root`` (file writes and fsyncs) and fails the ``fail_at``-th (and, with
    ``persistent``, every later one: a disk that stays full)."""

    def __init__(self, root: Path, code: int, fail_at: int | None = None, persistent: bool = False):
        self.root, self.code, self.fail_at, self.persistent = str(root), code, fail_at, persistent
        self.count = 0
        self.armed = True  # False: writes pass uncounted (setting up)

    def hit(self) -> bool:
        if not self.armed:
            return False
        self.count += 1
        if self.fail_at is None:
            return False
        return self.count == self.fail_at or (self.persistent and self.count > self.fail_at)

    def error(self, name: str) -> OSError:
        return OSError(self.code, os.strerror(self.code), name)


class _FaultyFile:
    """A file object that writes through ``faults``."""

    def __init__(self, real: Any, faults: Faults, name: str):
        self._real, self._faults, self._name = real, faults, name

    def write(self, data: Any) -> int:
        if self._faults.hit():
            if len(data) > 1:  # half of it reaches the file first: a torn write
                self._real.write(data[: len(data) // 2])
                self._real.flush()
            raise self._faults.error(self._name)
        return self._real.write(data)

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextmanager
def injected(faults: Faults) -> Iterator[Faults]:
    real_open, real_fsync = io.open, os.fsync

    def target(file: Any) -> str:
        return os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fspath(file)

    def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        name = target(file)
        if name.startswith(faults.root) and any(c in mode for c in "wa+"):
            return _FaultyFile(handle, faults, name)
        return handle

    def faulty_fsync(fd: int) -> None:
        if target(fd).startswith(faults.root) and faults.hit():
            raise faults.error(target(fd))
        real_fsync(fd)

    patches = [(builtins, "open", faulty_open), (io, "open", faulty_open), (os, "fsync", faulty_fsync)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield faults
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


CODES = [errno.ENOSPC, errno.EIO]
_writes: list[int] = []  # how many writes the last counted operation made
CONFIG = {"task": "cartpole_swingup", "obs_type": "states", "seed": 1, "num_frames": 4000}


def _state(frame: int) -> dict[str, Any]:
    rng = np.random.default_rng(frame)
    replay = {"frames": rng.random((3000, 5), dtype=np.float32), "next_index": np.int64(frame)}
    return {"frame": frame, "step": frame // 2, "weights": rng.random(4096).astype(np.float32), "replay": replay}


def _trial(root: Path) -> Path:
    """A trial as the worker leaves it at frame 2000: config, rows to 2000, status, a checkpoint of 2000."""
    out = root / "grid" / "aaaaaaaaaaaa"
    out.mkdir(parents=True)
    write_config(out, CONFIG)
    sink = DiskSink(out)
    for frame in range(0, 2001, 500):
        sink.log(frame, {"eval/episode_return": float(frame)})
    sink.close(TrialStatus(RUNNING))
    store.write_status(out, TrialStatus(RUNNING, frame=2000, num_frames=4000))
    checkpoint.save(out, _state(1000), 1000, 500)
    checkpoint.save(out, _state(2000), 2000, 1000)
    return out


def _loads(root: Path) -> None:
    from analysis.store import load_store

    loaded = load_store(root)
    assert len(loaded.trials) == 1 and not loaded.warnings, loaded.warnings


def _every_k(tmp_path: Path, operation: Any, code: int, persistent: bool = False) -> Iterator[tuple[int, Path]]:
    """For k = 1 .. the writes ``operation(out)`` makes: a fresh copy of the trial with the k-th write failing."""
    base = _trial(tmp_path / "base")
    clean = tmp_path / "clean"
    shutil.copytree(base.parents[1], clean)
    with injected(Faults(clean, code)) as counting:
        operation(clean / "grid" / base.name)
    assert counting.count >= 2, "the operation wrote (almost) nothing: the test would test nothing"
    _writes.append(counting.count)
    for k in range(1, counting.count + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(base.parents[1], root)
        out = root / "grid" / base.name
        with injected(Faults(root, code, fail_at=k, persistent=persistent)):
            yield k, out
        _loads(root)


@pytest.mark.parametrize("code", CODES, ids=["ENOSPC", "EIO"])
def test_a_checkpoint_write_error_at_any_write_keeps_the_checkpoints_before(tmp_path: Path, code: int) -> None:
    def save(out: Path) -> None:
        checkpoint.save(out, _state(3000), 3000, 1500)

    writes = 0
    for k, out in _every_k(tmp_path, save, code):
        writes = max(writes, _writes[-1])
        with pytest.raises(OSError) as raised:
            save(out)
        assert raised.value.errno == code, (k, raised.value)  # the refused write, not torch's RuntimeError
        assert not (out / checkpoint.PARTIAL).exists()
        found = checkpoint.load_latest(out)
        assert found.state is not None and not found.notes, (k, found.notes)
        # the frame-2000 checkpoint, or (the error came from the directory's fsync after both renames) the new
        # one, whole: either way an intact latest one and the one before it
        frame = found.state["frame"]
        assert frame == 2000 or (frame == 3000 and k == writes), (k, frame)
        assert checkpoint.load(out / checkpoint.PREVIOUS)["frame"] == frame - 1000
        assert np.array_equal(found.state["replay"]["frames"], _state(frame)["replay"]["frames"])


@pytest.mark.parametrize("persistent", [False, True], ids=["once", "disk-stays-full"])
@pytest.mark.parametrize("code", CODES, ids=["ENOSPC", "EIO"])
def test_a_status_write_error_at_any_write_leaves_a_status_the_planner_reads(
    tmp_path: Path, code: int, persistent: bool
) -> None:
    """The status is the old one or the new one as the planner reads it (a torn in-place rewrite reads as
    unfinished, which the old one was: the trial resumes from its checkpoint), or the writer said it failed."""
    final = TrialStatus(store.INTERRUPTED, frame=2000, num_frames=4000, error="stopped", checkpoint_frame=2000)

    def write(out: Path) -> None:
        store.write_status(out, final)

    for k, out in _every_k(tmp_path, write, code, persistent):
        try:
            write(out)
        except StoreWriteError as err:
            assert err.errno == code and f"could not write {out / '.status.json'}" in f"{err}".replace(
                str(out / store.STATUS_FILE), str(out / ".status.json")
            ), (k, err)  # names status.json or its temporary file beside it
        else:
            assert store.read_status(out) == final, k  # written after all (in place): then it is whole
        assert store.trial_state(out) in (RUNNING, store.INTERRUPTED), k
        assert not [p for p in out.iterdir() if p.name.startswith(f".{store.STATUS_FILE}.")], k  # no temp left


@pytest.mark.parametrize("code", CODES, ids=["ENOSPC", "EIO"])
def test_a_metrics_write_error_at_any_write_loses_no_row_written_before(tmp_path: Path, code: int) -> None:
    """Rows after the fault are refused (StoreWriteError naming metrics.csv); the rows before are all there;
    a torn row is never read as a row; resuming at the checkpoint (frame 2000) gives the rows to 2000 exactly."""
    base = _trial(tmp_path / "base")
    before = store.read_metric_rows(base / store.METRICS_FILE)
    frames = list(range(2500, 4001, 500))

    def log(root: Path, faults: Faults) -> None:
        out = root / "grid" / base.name
        with injected(faults):
            faults.armed = False
            sink = DiskSink(out, resume_frame=2000)  # opened (and truncated) before the faults are armed
            faults.armed = True
            for frame in frames:
                sink.log(frame, {"eval/episode_return": float(frame)})
            sink.sync()
            sink.close(TrialStatus(RUNNING))

    shutil.copytree(base.parents[1], tmp_path / "clean")
    counting = Faults(tmp_path / "clean", code)
    log(tmp_path / "clean", counting)
    assert counting.count >= len(frames) + 1
    for k in range(1, counting.count + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(base.parents[1], root)
        out = root / "grid" / base.name
        with pytest.raises(StoreWriteError) as raised:
            log(root, Faults(root, code, fail_at=k))
        assert raised.value.errno == code and store.METRICS_FILE in str(raised.value), (k, raised.value)
        rows = store.read_metric_rows(out / store.METRICS_FILE)
        assert rows[: len(before)] == before, k  # nothing written before is lost
        assert [int(r["frame"]) for r in rows[len(before) :]] == frames[: len(rows) - len(before)], k  # no torn row
        _loads(root)
        DiskSink(out, resume_frame=2000).close(TrialStatus(RUNNING))  # what the resumed trial does first
        assert store.read_metric_rows(out / store.METRICS_FILE) == before, k
