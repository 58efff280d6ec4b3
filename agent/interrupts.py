"""Stopping from outside, the same way whichever signal asks (issue #19).

SIGTERM is what schedulers, ``timeout`` and ``kill`` send; SIGINT is Ctrl-C.  Both mean "stop, keep what is
written": a trial ends ``interrupted`` (resumable from its checkpoint), a sweep prints its summary.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell reports it


class Interrupted(KeyboardInterrupt):
    """KeyboardInterrupt raised for SIGINT or SIGTERM; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(signal.Signals(self.signum), 130)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within it, SIGTERM raises SIGINT in this process: whichever SIGINT handler is current then handles it
    (Python's KeyboardInterrupt, or Ray Tune's graceful stop while a Tuner runs, whose second SIGINT stops at
    once).  Before, SIGTERM ended a sweep like kill -9: no summary, its trials left ``running``."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupt_once() -> Iterator[None]:
    """Within it, the first SIGINT or SIGTERM raises ``Interrupted``; later ones are ignored, so the final
    statuses that the unwinding writes are never cut short by a second Ctrl-C.  After it, the handlers before it
    come back, unless a signal came: then later ones stay ignored while the process exits (a second Ctrl-C
    there would otherwise print a traceback from the interpreter's shutdown)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    received: list[int] = []

    def first(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        # SIG_IGN, not a Python function: the interpreter resets Python handlers to the default while it shuts
        # down, and a second signal there would kill the process after its one line was printed.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Interrupted(signum)

    signal.signal(signal.SIGINT, first)
    signal.signal(signal.SIGTERM, first)
    try:
        yield
    finally:
        if not received:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
