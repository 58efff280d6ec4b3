"""What the driver does when the result store refuses writes or a run ended without a final status (#11).

- ``StoreFaultStopper`` ends the whole Ray experiment as soon as one pack reports that the store
  refused a write (a full disk, a read-only directory): every other trial would hit the same disk.
- ``store_fault`` finds such a refusal behind whatever Ray or our code raised (Ray wraps its own
  failed writes of experiment state in ``TuneError``).
- ``mark_interrupted`` puts every trial still ``running`` into ``interrupted`` (in place if the disk is
  too full for a new file), so no status claims a trial is training when nothing runs it: the worker's
  ending (``agent.trial_end.Ending``) of a trial whose worker is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.trial_end import Ending
from contract.store import INTERRUPTED, RUNNING, STORE_ERRNOS, StoreWriteError, read_status, write_status
from orchestrator.packing import free_disk_bytes

STORE_FAULT_KEY = "store_fault"  # a pack reports it once when the result store refused a write
FULL_DISK_BYTES = 1 << 20  # less free space than this on the results filesystem: a write there just failed


class StoreFaultError(Exception):
    """The result store refused a write; the message names the path and what was being written."""


def store_fault_stopper() -> Any:
    """A Tune stopper that stops every trial once any of them reports ``STORE_FAULT_KEY``; its ``fault`` is the
    first one reported.  (Built here so that importing this module imports no Ray: dry runs stay fast.)"""
    from ray import tune

    class StoreFaultStopper(tune.Stopper):
        def __init__(self) -> None:
            self.fault: str | None = None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            if result.get(STORE_FAULT_KEY) and self.fault is None:
                self.fault = str(result[STORE_FAULT_KEY])
            return self.fault is not None

        def stop_all(self) -> bool:
            return self.fault is not None

    return StoreFaultStopper()


def store_fault(err: BaseException) -> str | None:
    """One line naming the path and the write, when ``err`` (or what caused it) is the store refusing a
    write; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreFaultError):
            return str(current)
        if isinstance(current, StoreWriteError):
            return str(current)
        if isinstance(current, OSError) and current.errno in STORE_ERRNOS:
            where = current.filename or "the result store"
            return f"could not write {where}: {current.strerror or current}"
        current = current.__cause__ or current.__context__
    return None


def full_disk(results: Path) -> str | None:
    """A one-line fault when the results filesystem is (nearly) full: Ray's own writes of its experiment
    state fail there in ways that do not carry the OSError up (a truncated error file, say)."""
    try:
        free, _ = free_disk_bytes(results)
    except OSError:
        return None
    if free >= FULL_DISK_BYTES:
        return None
    return (
        f"could not write {results} (Ray's experiment state and checkpoint copies): No space left on device "
        f"({free:,} bytes free)"
    )


class QuietStoreErrors:
    """A logging filter for Ray's handlers: a refused store write that Ray logs with its traceback becomes one
    line (the sweep reports the fault itself), and Ray's hint to resume with ``Tuner.restore`` says what this
    driver does instead; everything else passes unchanged."""

    def filter(self, record: Any) -> bool:
        if "Tuner.restore(" in str(record.msg):  # Ray's hint after a stop: this driver never restores (issue #19)
            record.msg, record.args = (
                f"{record.getMessage().splitlines()[0]} (run the same command again: each trial resumes from "
                f"its own checkpoint in the store; Ray's state is never restored)",
                None,
            )
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError) and exc.errno in STORE_ERRNOS:
            record.msg, record.args, record.exc_info, record.exc_text = (
                f"{record.getMessage().splitlines()[0]}: {exc.strerror or exc}",
                None,
                None,
                None,
            )
        return True


def quiet_ray_store_errors() -> None:
    """Install ``QuietStoreErrors`` on the handlers of Ray's loggers in this process."""
    import logging

    for name in ("ray", "ray.train", "ray.tune"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, QuietStoreErrors) for f in handler.filters):
                handler.addFilter(QuietStoreErrors())


def mark_interrupted(out_dirs: Iterable[Path], reason: str) -> tuple[int, list[str]]:
    """Every trial in ``out_dirs`` whose status is ``running`` becomes ``interrupted`` with ``reason``.
    Returns (how many were marked, the status files that could not be written)."""
    marked, unwritable = 0, []
    for out_dir in out_dirs:
        status = read_status(Path(out_dir))
        if status is None or status.state != RUNNING:
            continue
        try:
            write_status(Path(out_dir), Ending(INTERRUPTED, reason).applied_to(status, status.frame))
            marked += 1
        except StoreWriteError as err:
            unwritable.append(str(err.filename))
    return marked, unwritable
