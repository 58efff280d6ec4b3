"""Pack members in worker processes of their own (issue #17, ``member_processes=true``).

Why: in one process a pack's environments, renderers, replays and lz4 decoders
take turns on the GIL, so 16 members step no faster than one. Here each member's
``MemberWorld`` (environments, replay, coverage and their random streams) lives
in a fresh interpreter of its own (``python -m agent.member_process``: spawn
semantics without re-running the trainer's main script; it never initializes
CUDA, and imports torch only to write checkpoints). As in Sample Factory, data moves through shared
memory and only small commands move through pipes:

- one shared block per pack holds every member's current observation, its
  evaluation observation, its action and its sampled batch, laid out as the
  learner reads them: ``obs[K, ...]`` and ``batch[key][K, rows, ...]``. The
  learner acts on and updates from views of it, without ``np.stack`` or copies;
- a training step is one command: the worker samples its batch into its slot,
  says so, then steps its environment with the action already in its slot and
  stores the transition. The learner runs the update as soon as every batch is
  in, so the update overlaps the environment steps while each member still
  samples exactly what it would alone (its replay as of this step, its own
  stream) and acts with its newest weights.

Faults: an exception in a worker's command ends that member ``failed`` with its
error line; a worker that dies ends its member ``failed`` with one line naming
the exit code; the others go on. A worker exits when its pipe closes (the
trainer ended) and is killed by the kernel when the trainer dies
(``PR_SET_PDEATHSIG``), so a killed pack leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from agent.member_world import MemberWorld, StepReport, WorldSpec
from contract.store import StoreWriteError

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.5  # how often a waiting trainer checks that the worker it waits for is still alive
_START_TIMEOUT_S = 600.0  # a worker that is not ready by then (imports, first render context) is stuck


class WorkerError(Exception):
    """A member's command failed in its worker (``line``, ``trace``) or its worker died (``trace`` None)."""

    def __init__(self, line: str, trace: str | None = None):
        super().__init__(line)
        self.line, self.trace = line, trace


# --------------------------------------------------------------------------- the shared block
@dataclass(frozen=True)
class SlotLayout:
    """Where each array of a pack's shared block lives: name -> (offset, shape, dtype)."""

    arrays: dict[str, tuple[int, tuple[int, ...], str]]
    nbytes: int

    @classmethod
    def for_pack(cls, spec: WorldSpec, members: int, action_dtype: str) -> SlotLayout:
        shapes: dict[str, tuple[tuple[int, ...], str]] = {
            "obs": ((members, *spec.obs_shape), spec.obs_dtype),
            "eval_obs": ((members, *spec.obs_shape), spec.obs_dtype),
            "action": ((members, spec.action_dim), action_dtype),
            **{f"batch/{key}": ((members, *shape), dtype) for key, (shape, dtype) in spec.batch.items()},
        }
        arrays, offset = {}, 0
        for name, (shape, dtype) in shapes.items():
            arrays[name] = (offset, shape, dtype)
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            offset += -(-size // 64) * 64  # cache-line aligned
        return cls(arrays, max(offset, 64))

    def views(self, buffer: mmap.mmap) -> dict[str, np.ndarray]:
        return {
            name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buffer, offset=offset)
            for name, (offset, shape, dtype) in self.arrays.items()
        }


def _create_block(nbytes: int) -> tuple[str, mmap.mmap]:
    """A file in /dev/shm (RAM) the workers map by path; the trainer unlinks it once all are attached, so a
    killed pack leaves nothing behind in /dev/shm either."""
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="bnsweep-pack-", dir=directory)
    try:
        os.ftruncate(fd, nbytes)
        return path, mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


def _map_block(path: str, nbytes: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- messages
def _send(conn: Connection, message: Any) -> None:
    # Plain pickle: torch tensors (checkpoints' agent state) travel by value, never as shared handles.
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Connection) -> Any:
    return pickle.loads(conn.recv_bytes())


# --------------------------------------------------------------------------- the worker process
def _die_with_parent(parent_pid: int) -> None:
    """The kernel kills this process when the trainer dies (Linux), whatever killed the trainer."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed pipe still ends the worker
        pass
    if os.getppid() != parent_pid:  # the trainer died before prctl took effect
        os._exit(1)


def worker_main(conn: Connection, config: Any, k: int, parent_pid: int, render_device: str | None) -> None:
    """A member's process: build its world, map the pack's block, then serve commands until the pipe closes."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes the pipe
    if render_device is not None:
        os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", render_device)
    try:
        world = MemberWorld(config)
        _send(conn, ("ok", world.spec()))
        _, path, layout = _recv(conn)
        views = layout.views(_map_block(path, layout.nbytes))
    except EOFError:
        return
    except Exception as err:  # noqa: BLE001 - reported to the trainer as this member's failure
        _send(conn, ("error", f"{type(err).__name__}: {err}", traceback.format_exc()))
        return
    mine = {name: view[k] for name, view in views.items()}
    batch = {name.removeprefix("batch/"): view for name, view in mine.items() if name.startswith("batch/")}
    _send(conn, ("ok", None))
    commands: dict[str, Callable[..., Any]] = {
        "reset": lambda: mine["obs"].__setitem__(..., world.reset()),
        "coverage": world.coverage_values,
        "eval_reset": lambda: _evaluated(world, world.eval_reset(), mine),
        "eval_step": lambda: _evaluated(world, world.eval_step(mine["action"].copy()), mine),
        "load": world.load_state_dict,
        "checkpoint": lambda state, out_dir, frame, step, owner: str(
            world.save_checkpoint(state, Path(out_dir), frame, step, owner)
        ),
    }
    while True:
        try:
            name, *args = _recv(conn)
        except (EOFError, OSError):
            break  # the trainer is gone or done
        if name == "close":
            break
        try:
            if name == "step":
                rows = args[0]
                if rows:
                    try:
                        world.sample(rows, out=batch)
                        _send(conn, ("ok", True))
                    except RuntimeError:  # no complete n-step transition yet (only with tiny seed phases)
                        _send(conn, ("ok", False))
                    # any other error is the member's failure: the reply below, and no step (it leaves the pack)
                report = world.step(mine["action"].copy())
                mine["obs"][...] = world.obs
                _send(conn, ("ok", report))
            else:
                _send(conn, ("ok", commands[name](*args)))
        except Exception as err:  # noqa: BLE001 - this member's failure, not the pack's
            reply: tuple[Any, ...] = ("error", f"{type(err).__name__}: {err}", traceback.format_exc())
            if isinstance(err, OSError) and name == "checkpoint":
                reply = ("store_error", err.errno, err.strerror or str(err), str(err.filename or ""))
            _send(conn, reply)
    world.close()


def _evaluated(world: MemberWorld, reply: tuple[float, bool], mine: dict[str, np.ndarray]) -> tuple[float, bool]:
    mine["eval_obs"][...] = world.eval_obs  # where the trainer reads it
    return reply


# --------------------------------------------------------------------------- the trainer's side
class Reply:
    """A reply a worker still owes; ``result()`` waits for it (and must be called in the order sent)."""

    def __init__(self, worker: WorkerWorld, convert: Callable[[Any], Any] | None = None):
        self.worker, self.convert, self._done, self._value = worker, convert, False, None

    def result(self) -> Any:
        if not self._done:
            value = self.worker.receive()
            self._value, self._done = (self.convert(value) if self.convert else value), True
        return self._value


class WorkerWorld:
    """One member's world in its worker process, as the trainer drives it."""

    def __init__(self, pack: WorkerPack, k: int, conn: Connection, process: _Process):
        self.pack, self.k, self.conn, self.process = pack, k, conn, process
        self.last = False
        self.spec: WorldSpec | None = None

    @property
    def obs(self) -> np.ndarray:
        return self.pack.views["obs"][self.k]

    @property
    def eval_obs(self) -> np.ndarray:
        return self.pack.views["eval_obs"][self.k]

    def batch(self) -> dict[str, np.ndarray]:
        return {name.removeprefix("batch/"): v[self.k] for name, v in self.pack.views.items() if "batch/" in name}

    def receive(self) -> Any:
        """The worker's next reply; ``WorkerError`` when its command failed or the worker died."""
        while True:
            try:
                if self.conn.poll(_POLL_S):
                    status, *payload = _recv(self.conn)
                    break
            except (EOFError, OSError):
                pass  # the pipe closed: the worker is gone (its exit code is read below)
            else:
                if self.process.is_alive():
                    continue
            self.process.join(5)
            raise WorkerError(f"the worker process of member {self.k} died (exit code {self.process.exitcode})")
        if status == "ok":
            return payload[0] if payload else None
        if status == "store_error":
            errno, strerror, filename = payload
            raise StoreWriteError(OSError(errno, strerror, filename), filename, "a checkpoint")
        raise WorkerError(payload[0], payload[1])

    def send(self, *command: Any, convert: Callable[[Any], Any] | None = None) -> Reply:
        try:
            _send(self.conn, command)
        except (BrokenPipeError, OSError):
            pass  # the reply's receive() says how the worker ended
        return Reply(self, convert)

    # the calls the trainer makes; each returns a Reply (wait with .result())
    def reset(self) -> Reply:
        self.last = False
        return self.send("reset")

    def start_step(self, action: np.ndarray, rows: int) -> tuple[Reply | None, Reply]:
        """Write the action, then: sample ``rows`` into this member's batch slot (a Reply of whether it could),
        and step the environment (a Reply of the ``StepReport``)."""
        self.pack.views["action"][self.k] = action
        step = self.send("step", rows, convert=self._stepped)
        return (Reply(self) if rows else None), step

    def coverage(self) -> Reply:
        return self.send("coverage")

    def eval_reset(self) -> Reply:
        return self.send("eval_reset")

    def eval_step(self, action: np.ndarray) -> Reply:
        self.pack.views["action"][self.k] = action
        return self.send("eval_step")

    def load(self, state: dict[str, Any]) -> Reply:
        return self.send("load", state)

    def save_checkpoint(self, loop_state: dict[str, Any], out_dir: Path, frame: int, step: int, owner: Any) -> Reply:
        """The worker adds its world's part (coverage, streams, replay) and writes the checkpoint itself: the
        replay never crosses a pipe."""
        return self.send("checkpoint", loop_state, str(out_dir), frame, step, owner, convert=Path)

    def _stepped(self, report: StepReport) -> StepReport:
        self.last = report.last
        return report

    def close(self) -> None:
        try:
            _send(self.conn, ("close",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class WorkerPack:
    """The worker processes of a pack and their shared block."""

    def __init__(self, configs: list[Any], action_dtype: str, render_device: str | None = None):
        self.workers: list[WorkerWorld] = []
        self.views: dict[str, np.ndarray] = {}
        self._block: mmap.mmap | None = None
        self._registered: int | None = None  # the block's address while CUDA has it page-locked
        try:
            for k, config in enumerate(configs):
                self.workers.append(WorkerWorld(self, k, *_start_worker(config, k, render_device)))
            specs = [_wait_ready(worker) for worker in self.workers]
            self.spec = specs[0]
            layout = SlotLayout.for_pack(self.spec, len(configs), action_dtype)
            path, self._block = _create_block(layout.nbytes)
            try:
                replies = [worker.send("attach", path, layout) for worker in self.workers]
                for reply in replies:
                    reply.result()
            finally:
                os.unlink(path)  # every worker has mapped it (or failed): nothing is left in /dev/shm
            self.views = layout.views(self._block)
        except BaseException:
            self.close()
            raise

    def register_with_cuda(self) -> bool:
        """Page-lock the shared block for CUDA (``cudaHostRegister``), so the learner copies the batches the
        workers sampled into it to the GPU straight from there, asynchronously: no staging copy on the host.
        False (the learner then stages as before) when CUDA refuses."""
        import torch

        if self._block is None or not torch.cuda.is_available():
            return False
        pointer = ctypes.addressof(ctypes.c_char.from_buffer(self._block))
        status = torch.cuda.cudart().cudaHostRegister(pointer, len(self._block), 0)
        if int(status) != 0:
            print(
                f"warning: cudaHostRegister of the pack's shared block failed ({status}); staging copies",
                file=sys.stderr,
            )
            return False
        self._registered = pointer
        return True

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.views = {}
        if self._registered is not None:
            import torch

            torch.cuda.cudart().cudaHostUnregister(self._registered)
            self._registered = None


class _Process:
    """A worker's process, as the trainer watches it."""

    def __init__(self, popen: subprocess.Popen[bytes]):
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        self.popen.kill()


def _start_worker(config: Any, k: int, render_device: str | None) -> tuple[Connection, _Process]:
    """A fresh interpreter running this module (spawn-like: it inherits no CUDA context, no locks, and never
    re-runs the trainer's main script, which multiprocessing's spawn would), joined by a socket pair."""
    ours, theirs = socket.socketpair()
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        popen = subprocess.Popen(
            [sys.executable, "-m", "agent.member_process", str(theirs.fileno()), str(k), str(os.getpid())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    _send(conn, (config, render_device))
    return conn, _Process(popen)


def _worker_entry(argv: list[str]) -> None:
    fd, k, parent_pid = (int(arg) for arg in argv)
    conn = Connection(fd)
    try:
        config, render_device = _recv(conn)
    except EOFError:
        return
    worker_main(conn, config, k, parent_pid, render_device)


def _wait_ready(worker: WorkerWorld) -> WorldSpec:
    if not worker.conn.poll(_START_TIMEOUT_S):
        worker.process.kill()
        raise WorkerError(f"the worker process of member {worker.k} did not start in {_START_TIMEOUT_S:.0f} s")
    spec: WorldSpec = worker.receive()
    worker.spec = spec
    return spec


if __name__ == "__main__":  # a worker: started by WorkerPack as python -m agent.member_process FD K PARENT_PID
    _worker_entry(sys.argv[1:])
