"""The trial status machine (issue #11), defined once: the states a trial's ``status.json`` can hold, the moves
between them (``contract.store.write_status`` refuses any other) and the record the file holds.

    new (no status.json yet) -> running -> completed | diverged | failed | interrupted
    failed | interrupted -> running (a rerun resumes from the latest intact checkpoint)
    new | failed | interrupted -> failed | interrupted (a run that ends before it starts running: its set-up
        raised, or it was stopped while starting; the Ray trainable records it so)

``interrupted``: stopped from outside (Ctrl-C, Ray ending the trial, a killed driver, a store that could not be
written) with nothing wrong in the trial itself; ``failed``: the trial itself raised; ``diverged``: its losses or
Q values became non-finite, which is a result (method.md section 7), not a failure.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class Status(enum.StrEnum):
    """A trial's state.  A ``str``: it is written to and read from JSON as its value (``"completed"``) and
    compares equal to it, so a pandas column of statuses read from the store matches ``Status.DIVERGED``."""

    NEW = "new"
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


NEW, RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED = Status
STATUSES = tuple(Status)
TRANSITIONS: Mapping[Status, tuple[Status, ...]] = {
    NEW: (RUNNING, FAILED, INTERRUPTED),
    RUNNING: (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED),
    FAILED: (RUNNING, FAILED, INTERRUPTED),
    INTERRUPTED: (RUNNING, FAILED, INTERRUPTED),
    COMPLETED: (),
    DIVERGED: (),
}
FINISHED_STATUSES = (COMPLETED, DIVERGED)  # a diverged trial is a result (method.md section 7), not a failure
UNFINISHED_STATUSES = (NEW, RUNNING, FAILED, INTERRUPTED)  # a rerun runs these (from their checkpoints)


class StatusTransitionError(ValueError):
    """A write that would move a trial along no edge of the status machine (a bug in the writer)."""


def check_transition(previous: str, following: str) -> None:
    """Raise StatusTransitionError unless the status machine lets a trial go from ``previous`` to ``following``."""
    if following not in TRANSITIONS.get(Status(previous), ()):
        allowed = ", ".join(TRANSITIONS[Status(previous)]) or "none: it is finished"
        raise StatusTransitionError(
            f"trial status {previous} -> {following}: not a move of the status machine (from {previous}: {allowed})"
        )


@dataclass(frozen=True)
class TrialStatus:
    """A trial's ``status.json``: where it is in the status machine and what its runs recorded.  Frozen: a
    writer makes the next one with ``dataclasses.replace``.

    On disk it is the JSON object it always was (``to_json``): the state under the key ``status``, every other
    field under its own name, and a field at its empty value (None, False, no fallbacks) left out, as the
    dict writers before this record left the key out; ``resumed_from_frame`` goes with ``started_at`` (the
    worker writes both when a run starts, null for a fresh start).  ``from_json`` reads any object: a missing
    or unknown state reads as ``new`` (what ``state_of`` made of it before), a value of the wrong type as
    absent, and keys this record does not know are kept in ``extra`` and written back after the others.
    """

    state: Status  # never written as NEW (read so from a file without a known state); text is taken and converted
    frame: int | None = None  # frames trained (metrics.csv holds rows to here)
    num_frames: int | None = None  # frames planned (the trial's config)
    wall_time_s: float | None = None  # wall time of all its runs together
    started_at: str | None = None  # ISO time the latest run started
    resumed_from_frame: int | None = None  # the latest run's checkpoint frame (None: it started fresh)
    pack_size: int | None = None  # members of the pack the latest run trained in
    checkpoint_fallbacks: tuple[dict[str, Any], ...] = field(default=(), hash=False)  # {at, note, [resumed_from_frame]}
    error: str | None = None  # why it ended diverged, failed or interrupted
    traceback: str | None = None  # of a failed run
    store_error: bool = False  # interrupted because the store refused a write
    checkpoint_frame: int | None = None  # of an interrupted run: where a rerun resumes
    finished_at: str | None = None  # ISO time the latest run ended
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)  # keys this version does not know

    def __post_init__(self) -> None:
        if self.state not in STATUSES:
            raise ValueError(f"trial state {self.state!r}: expected one of {', '.join(STATUSES)}")
        object.__setattr__(self, "state", Status(self.state))

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``status.json``: the keys and values the dict writers wrote."""
        out: dict[str, Any] = {"status": self.state}
        for spec in fields(self):
            if spec.name in ("state", "extra"):
                continue  # the state is written under "status" (above), unknown keys after the others (below)
            value = getattr(self, spec.name)
            if spec.name == "checkpoint_fallbacks":
                value = [dict(entry) for entry in value] or None
            if (value is not None and value is not False) or (spec.name == "resumed_from_frame" and self.started_at):
                out[spec.name] = value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out and k not in _STATUS_KEYS}}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TrialStatus:
        """A record of any JSON object read from ``status.json`` (see the class: nothing in it raises)."""
        state = value.get("status")
        known: dict[str, Any] = {"state": state if state in STATUSES else NEW}
        for name, kind in _STATUS_TYPES.items():
            item = value.get(name)
            if kind is int and isinstance(item, float) and item.is_integer():
                item = int(item)
            elif kind is float and isinstance(item, int) and not isinstance(item, bool):
                item = float(item)
            if isinstance(item, kind) and (kind is bool or not isinstance(item, bool)):
                known[name] = item
        fallbacks = value.get("checkpoint_fallbacks")
        if isinstance(fallbacks, list):
            known["checkpoint_fallbacks"] = tuple(dict(entry) for entry in fallbacks if isinstance(entry, dict))
        extra = {k: v for k, v in value.items() if k not in _STATUS_KEYS}
        return cls(**known, extra=extra)


# The fields of TrialStatus read by type, from its declaration (`int | None` -> int; checkpoint_fallbacks is read on
# its own), and every key it owns.
_STATUS_TYPES: dict[str, type] = {
    name: next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
    for name, hint in typing.get_type_hints(TrialStatus).items()
    if name not in ("state", "checkpoint_fallbacks", "extra")
}
_STATUS_KEYS = frozenset({"status", "checkpoint_fallbacks", *_STATUS_TYPES})
