"""Trial checkpoints on disk: the one writer and reader of their format (issue #11).

A trial directory holds up to three checkpoint directories::

    checkpoint/        the latest complete checkpoint
    checkpoint.prev/   the one before it, kept so that a damaged latest one has an intact fallback
    checkpoint.tmp/    one being written; complete (and then usable) only once its manifest exists

Each holds ``state.pt``, ``replay.pt`` (the replay, when saved; a finished trial drops it, issue #19) and
``manifest.json`` = ``{"format": 2, "frame", "step", "files": {"state.pt": {"bytes", "sha256"}, ...},
"owner": {"trial_id", "layout"}}`` (``owner``: whose checkpoint it is, since issue #19).  The manifest is
written last, so a directory with a manifest whose size and hash match is a whole checkpoint, and anything
else is ignored.  ``state.pt`` and ``replay.pt`` are ``torch.save`` of plain containers, numbers, strings and
tensors only (numpy arrays and scalars are stored as tensors with a tag, see ``to_plain``), read back with
``torch.load(weights_only=True)``: loading a checkpoint never runs code, so a shared store that someone else
can write into cannot run code in our workers.

``load_latest`` tries the latest checkpoint, then an unrenamed complete one, then the previous one; a
damaged or untrusted checkpoint is moved aside to ``checkpoint.damaged/`` and named in the returned
notes, which the worker writes into ``status.json``.

What a trial's ``state.pt`` and ``replay.pt`` hold together is a ``TrialCheckpoint``.  Checkpoints of older
layouts are never loaded as they are: those written before this format (pickles read with ``weights_only=False``)
are set aside, and those missing a part added since (``OUTDATED``) stop the worker with one line; ``python -m
agent.checkpoint upgrade DIR`` converts both, for a store you trust, and is the only place that knows them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from math import isqrt, nan
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from agent.drqv2 import FEATURE_ORDER
from agent.networks import Encoder, chw_to_hwc_columns
from contract.checkpoints import (  # noqa: F401 - the layout's names: callers of this module take them from here too
    DAMAGED,
    FORMAT,
    LATEST,
    MANIFEST_FILE,
    PARTIAL,
    PREVIOUS,
    REPLAY_FILE,
    STATE_FILE,
    candidates,
    frame_of,
    read_manifest,
)
from contract.config import build_config
from contract.files import open_regular
from contract.store import read_config

_NDARRAY, _NPSCALAR = "__ndarray__", "__npscalar__"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: damaged, incomplete, or in a format that is not read implicitly."""


class OutdatedCheckpoint(CheckpointError):
    """A whole checkpoint of an older layout: kept as it is (``upgrade`` converts it), the trial not run."""


# --------------------------------------------------------------------------- what a trial's checkpoint holds
@dataclass(frozen=True)
class TrialCheckpoint:
    """One trial's checkpoint (a pack's member writes a single trial's): the trainer's counters and windows, the
    member's agent, and its world's coverage, random streams and replay (``agent.member_world.WORLD_KEYS``)."""

    frame: int
    step: int  # agent steps
    next_log_frame: int
    next_eval_frame: int
    next_q_bias_frame: int
    next_checkpoint_frame: float
    pending: dict[str, list[float]]  # training metrics since the last log row
    q_bias_pending: list[tuple[float, float]]  # Q-bias (mean, std) measured since the last evaluation row
    agent: dict[str, Any]  # DrQV2Agent.member_state_dict
    coverage: dict[str, Any]
    rng: dict[str, Any]  # the world's streams: replay sampling, environment, evaluation environment
    replay: dict[str, Any] | None  # None: not saved (checkpoint_replay=false) or dropped when the trial finished

    def to_state(self) -> dict[str, Any]:
        """The plain mapping ``save`` writes (the replay goes into a file of its own)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TrialCheckpoint:
        """The record of a state ``load`` read; KeyError for a state that lacks a part (not a trial's)."""
        return cls(**{f.name: state[f.name] for f in fields(cls)})


# What every layout of a trial's checkpoint holds, the oldest included: the member's agent, whose parts and those
# beside it that later layouts added are what ``outdated`` looks for.
ALWAYS_SAVED = ("agent",)


def outdated(state: Mapping[str, Any]) -> list[str]:
    """What makes ``state`` (a trial's checkpoint) one of an older layout that ``upgrade`` converts; [] if none.

    Only a state with the parts every layout had is judged: one without them is no trial's checkpoint of any
    layout, nothing ``upgrade`` could convert, and loading it fails the trial as such (``TrialCheckpoint.from_state``).
    """
    if any(part not in state for part in ALWAYS_SAVED):
        return []
    agent = state.get("agent") or {}
    found = [f"no {key}" for key in ("next_q_bias_frame", "q_bias_pending") if key not in state]
    if agent.get("encoder") and agent.get("feature_order") != FEATURE_ORDER:
        found.append("encoder features in (C, H, W) order")
    if _critic_bn_layers(agent) and "critic_i_stats" not in agent:
        found.append("no Critic-I statistics")
    return found


def check_layout(state: Mapping[str, Any], out_dir: Path) -> None:
    """``OutdatedCheckpoint``, in one line naming the trial and the command, when ``state`` is of an older layout."""
    found = outdated(state)
    if found:
        raise OutdatedCheckpoint(
            f"{out_dir}: its checkpoint is of an older layout ({', '.join(found)}) and is not loaded as it is; "
            f"convert it with `python -m agent.checkpoint upgrade {out_dir}`, then run again"
        )


# --------------------------------------------------------------------------- plain containers
def to_plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars replaced by tagged tensors (weights_only can read the rest)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("a checkpoint holds no object arrays")
        # Over the array's own memory (read-only ones too: saving never writes them): the replay is written
        # from its buffers, never copied; torch.save pickles numpy arrays through copies that held ~6x the
        # replay in memory at once (measured).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(np.ascontiguousarray(value))
        return {_NDARRAY: tensor, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return {_NPSCALAR: value.item(), "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(to_plain(item) for item in value)
    return value


def from_plain(value: Any) -> Any:
    """The inverse of ``to_plain``."""
    if isinstance(value, dict):
        if _NDARRAY in value:
            tensor = value[_NDARRAY]
            return tensor.numpy().astype(np.dtype(value["dtype"]), copy=False).reshape(value["shape"])
        if _NPSCALAR in value:
            return np.dtype(value["dtype"]).type(value[_NPSCALAR])
        return {key: from_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(from_plain(item) for item in value)
    return value


# --------------------------------------------------------------------------- writing
class _HashingWriter:
    """A file object that hashes what passes through it, so a checkpoint is never read back to hash it."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.sha256, self.bytes = handle, hashlib.sha256(), 0
        self.error: OSError | None = None  # torch.save turns a failed write into a RuntimeError: keep the cause

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(out_dir: Path, state: dict[str, Any], frame: int, step: int, owner: Mapping[str, Any] | None = None) -> Path:
    """Write ``state`` as the trial's latest checkpoint; the latest one before it becomes the previous one.
    ``owner`` (``contract.store.checkpoint_owner`` of the trial's config) goes into the manifest: a checkpoint says
    whose it is, and ``load_latest`` never adopts another config's (issue #19).

    Raises the ``OSError`` of a write the disk refused, after removing the partial directory; the existing
    checkpoints are untouched."""
    out_dir = Path(out_dir)
    partial, latest, previous = out_dir / PARTIAL, out_dir / LATEST, out_dir / PREVIOUS
    writers: list[_HashingWriter] = []
    # The replay in a file of its own: a finished trial drops it (prune_finished) without rewriting the rest.
    parts = {STATE_FILE: {k: v for k, v in state.items() if k != "replay"}}
    if state.get("replay") is not None:
        parts[REPLAY_FILE] = state["replay"]
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()  # never parents=True: a trial directory that vanished is not made again (issue #19)
        files = {}
        for name, part in parts.items():
            with open(partial / name, "wb") as handle:
                writer = _HashingWriter(handle)
                writers.append(writer)
                # torch.save needs only write() and flush(); its annotation (str | PathLike | IO[bytes]) is narrower.
                torch.save(to_plain(part), writer)  # type: ignore[arg-type]
                handle.flush()
                os.fsync(handle.fileno())
            files[name] = {"bytes": writer.bytes, "sha256": writer.sha256.hexdigest()}
        manifest = {
            "format": FORMAT,
            "frame": int(frame),
            "step": int(step),
            "files": files,
            **({"owner": dict(owner)} if owner is not None else {}),
        }
        _write_manifest(partial, manifest)
    except Exception as err:
        shutil.rmtree(partial, ignore_errors=True)  # give the space back: the disk may be full
        refused = next((w.error for w in writers if w.error is not None), None)
        if not isinstance(err, OSError) and refused is not None:
            raise refused from err  # the refused write, not torch's RuntimeError about it
        raise
    # Two renames; a crash between them leaves PREVIOUS and a complete PARTIAL, both found by load_latest.
    if latest.exists():
        shutil.rmtree(previous, ignore_errors=True)
        latest.rename(previous)
    partial.rename(latest)
    _fsync_dir(out_dir)
    return latest


def _write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """The manifest, written last and durably: once it is there, the checkpoint is whole."""
    with open(directory / MANIFEST_FILE, "w") as handle:
        handle.write(json.dumps(manifest, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --------------------------------------------------------------------------- reading
def _file_sha256(path: Path) -> tuple[int, str]:
    sha256, size = hashlib.sha256(), 0
    with os.fdopen(open_regular(path), "rb") as handle:  # a FIFO planted as state.pt would block open()
        while chunk := handle.read(1 << 24):
            sha256.update(chunk)
            size += len(chunk)
    return size, sha256.hexdigest()


def verify(directory: Path) -> dict[str, Any]:
    """The manifest of a whole, undamaged checkpoint in ``directory``; else ``CheckpointError`` saying why."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        if (directory / STATE_FILE).exists() and not (directory / MANIFEST_FILE).exists() and directory.name != PARTIAL:
            raise CheckpointError(
                f"{directory} is in the format before issue #11 (a pickle, which could run "
                f"code when loaded): not loaded; if you trust this store, convert it with "
                f"`python -m agent.checkpoint upgrade {directory.parent}`"
            )
        raise CheckpointError(f"{directory} is incomplete (no readable {MANIFEST_FILE})")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{directory}: unknown checkpoint format {manifest.get('format')!r}")
    for name, expected in manifest.get("files", {}).items():
        try:
            size, digest = _file_sha256(directory / name)
        except OSError as err:
            raise CheckpointError(f"{directory / name} unreadable: {err.strerror or err}") from err
        if size != expected.get("bytes") or digest != expected.get("sha256"):
            raise CheckpointError(
                f"{directory / name} is damaged ({size} bytes, sha256 {digest[:12]}…; the "
                f"manifest says {expected.get('bytes')} bytes, {str(expected.get('sha256'))[:12]}…)"
            )
    return manifest


def load(directory: Path) -> dict[str, Any]:
    """The state of the checkpoint in ``directory``, verified first and read without running code."""
    manifest = verify(directory)
    state = _load_part(Path(directory) / STATE_FILE)
    if REPLAY_FILE in manifest.get("files", {}):
        state["replay"] = _load_part(Path(directory) / REPLAY_FILE)
    elif "replay" not in state:
        state["replay"] = None  # dropped when the trial finished (prune_finished), or never saved
    return state


def _load_part(path: Path) -> Any:
    try:
        with os.fdopen(open_regular(path), "rb") as handle:  # a FIFO planted as the file would block open()
            # By its descriptor's path where there is one: torch reads a path with its own (fast) file reader,
            # and this one is the regular file just checked, whatever the name points at now.
            proc = Path(f"/proc/self/fd/{handle.fileno()}")
            source: Any = proc if proc.exists() else handle
            return from_plain(torch.load(source, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - an unreadable file is one more damaged checkpoint
        raise CheckpointError(f"{path} unreadable: {type(err).__name__}: {err}") from err


@dataclass
class Loaded:
    """What ``load_latest`` found: the state (None: start from frame 0) and what it had to pass over."""

    state: dict[str, Any] | None
    source: str | None = None  # the directory name the state came from
    notes: list[str] = field(default_factory=list)  # at most one line: what was passed over, for status.json


def foreign_reason(directory: Path, manifest: Mapping[str, Any] | None, owner: Mapping[str, Any] | None) -> str | None:
    """Why the checkpoint in ``directory`` is not this trial's to resume (None: it is, or it does not say whose it
    is: written before issue #19).  Another trial id: another config's checkpoint; the same trial with another
    state layout (``contract.store.STATE_LAYOUT_KEYS``, e.g. ``frame_codec``): its replay cannot be loaded."""
    theirs = (manifest or {}).get("owner")
    if owner is None or not isinstance(theirs, dict):
        return None
    if theirs.get("trial_id") != owner.get("trial_id"):
        return (
            f"{directory} is the checkpoint of another config (trial {str(theirs.get('trial_id'))[:40]!r}, "
            f"this one is {owner.get('trial_id')}): not adopted"
        )
    layout, mine = theirs.get("layout") or {}, owner.get("layout") or {}
    differ = [f"{k}={layout.get(k)!r}, this run {v!r}" for k, v in mine.items() if layout.get(k, v) != v]
    if differ:
        return f"{directory} was written with {'; '.join(differ)}: its state cannot be loaded, not resumable"
    return None


def load_latest(out_dir: Path, owner: Mapping[str, Any] | None = None) -> Loaded:
    """The newest intact checkpoint of a trial; damaged ones, and (given ``owner``) another config's or one
    of another state layout (``foreign_reason``), are moved to ``checkpoint.damaged/``."""
    out_dir = Path(out_dir)
    found: list[tuple[int, Path, dict[str, Any]]] = []
    notes: list[str] = []
    for directory in candidates(out_dir):
        foreign = foreign_reason(directory, read_manifest(directory), owner)
        if foreign is not None:  # decided from the manifest: a multi-GB state is not read to be refused
            notes.append(foreign)
            _set_aside(directory)
            continue
        try:
            state = load(directory)
        except CheckpointError as err:
            if directory.name == PARTIAL and read_manifest(directory) is None:
                shutil.rmtree(directory, ignore_errors=True)  # a write that never finished: nothing to keep
                continue
            notes.append(str(err))
            _set_aside(directory)
            continue
        found.append((int(state.get("frame", 0)), directory, state))
    if not found:
        return Loaded(
            None,
            None,
            ["; ".join([*notes, "no intact checkpoint left: the trial restarts from frame 0"])] if notes else [],
        )
    frame, directory, state = max(found, key=lambda item: item[0])
    source = directory.name
    if source != LATEST and not (out_dir / LATEST).exists():  # the next save keeps it as the previous one
        directory.rename(out_dir / LATEST)
    # one line per fallback: what was passed over, and where the trial resumes
    return Loaded(state, source, ["; ".join([*notes, f"resumed from {source}/ (frame {frame})"])] if notes else [])


class NotApplicable(CheckpointError):
    """A verified checkpoint whose state does not fit this trial's networks or replay (written before its
    manifest said whose it is, issue #19): set aside, so the next run starts fresh instead of failing again."""


def apply_or_set_aside(apply: Callable[[], None], out_dirs: Sequence[Path]) -> None:
    """``apply()`` (loading the checkpoints' states into a trainer); when it raises, every checkpoint of
    ``out_dirs`` is set aside and NotApplicable says so, once, in one line."""
    try:
        apply()
    except Exception as err:  # noqa: BLE001 - any misfit (shapes, keys, types) is the same: not resumable
        for out_dir in out_dirs:
            for directory in list(candidates(out_dir)):
                _set_aside(directory)
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise NotApplicable(
            f"the checkpoint verified but does not fit this config ({detail}): set aside as {DAMAGED}/, "
            f"the next run starts from frame 0"
        ) from err


def _set_aside(directory: Path) -> None:
    """Keep one damaged checkpoint for inspection, out of the way of the next save."""
    target = directory.parent / DAMAGED
    shutil.rmtree(target, ignore_errors=True)
    try:
        directory.rename(target)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)


def prune_finished(out_dir: Path, keep_replay: bool = False) -> None:
    """A finished trial keeps only its latest checkpoint (and a damaged one, for inspection): the previous one was
    a fallback for resuming, which it never will.  Its replay goes too unless ``keep_replay`` (issue #19: a pixel
    replay is GiBs that nobody resumes from); the weights, statistics and counters stay, so analysis can read them
    and a longer run can continue from them (with an empty replay, as ``checkpoint_replay=false`` does)."""
    for name in (PREVIOUS, PARTIAL):
        shutil.rmtree(Path(out_dir) / name, ignore_errors=True)
    if not keep_replay:
        drop_replay(Path(out_dir) / LATEST)


def drop_replay(directory: Path) -> None:
    """Remove the replay from the checkpoint in ``directory``: its file goes, the manifest (rewritten atomically)
    says so.  A checkpoint without a replay file, or not whole, is left as it is."""
    manifest = read_manifest(directory)
    if manifest is None or REPLAY_FILE not in manifest.get("files", {}):
        return
    files = {k: v for k, v in manifest["files"].items() if k != REPLAY_FILE}
    staging = directory / (MANIFEST_FILE + ".tmp")
    with open(staging, "w") as handle:
        handle.write(json.dumps({**manifest, "files": files, "replay_dropped": True}, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    staging.rename(directory / MANIFEST_FILE)  # first: a crash leaves a whole checkpoint either way
    (directory / REPLAY_FILE).unlink(missing_ok=True)
    _fsync_dir(directory)


# --------------------------------------------------------------------------- conversion of old checkpoints
def upgrade(root: Path) -> int:
    """Convert every trial checkpoint under ``root`` of an older layout, in place (a store you trust: a pickle from
    before this format is unpickled).  The previous checkpoint, of the old layout too, goes.  Returns how many."""
    converted = 0
    for path in sorted(Path(root).rglob(f"{LATEST}/{STATE_FILE}")):
        directory = path.parent
        manifest = read_manifest(directory)
        try:
            state = _legacy_pickle(path) if manifest is None else load(directory)
        except CheckpointError as err:
            print(f"not converted: {err}", flush=True)
            continue
        if manifest is not None and not outdated(state):
            continue
        state = upgrade_state(state, directory.parent)
        owner = manifest.get("owner") if manifest is not None else None
        save(directory.parent, state, int(state.get("frame", 0)), int(state.get("step", 0)), owner=owner)
        shutil.rmtree(directory.parent / PREVIOUS, ignore_errors=True)  # the old-layout copy
        converted += 1
        print(f"converted {directory}", flush=True)
    return converted


def _legacy_pickle(path: Path) -> dict[str, Any]:
    """A checkpoint from before this format (issue #11): a pickle, trusted by the caller of ``upgrade``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("replay") is not None:  # the old format kept the replay's arrays as tensors
        state["replay"] = {k: v.numpy() if torch.is_tensor(v) else v for k, v in state["replay"].items()}
    return dict(state)


def upgrade_state(state: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """``state`` with every part added since its layout filled in as the worker used to when it resumed such a
    checkpoint (``out_dir``: its trial directory, whose config.yaml says when Q-bias is measured)."""
    state = dict(state)
    if "next_q_bias_frame" not in state:  # from before q_bias_every_frames: its first measurement is still due
        state["next_q_bias_frame"] = build_config(read_config(out_dir)).q_bias_every_frames
    state.setdefault("q_bias_pending", [])
    state["agent"] = upgrade_agent_state(state["agent"])
    return state


def upgrade_agent_state(agent: Mapping[str, Any]) -> dict[str, Any]:
    """A member's agent state (``DrQV2Agent.member_state_dict``) of an older layout in today's: trunk weights for
    (H, W, C)-ordered encoder features, and Critic-I statistics (none kept: NaN, as before the first update)."""
    agent = dict(agent)
    if agent.get("encoder") and agent.get("feature_order") != FEATURE_ORDER:
        agent = _from_chw_feature_order(agent)
    layers = _critic_bn_layers(agent)
    if layers and "critic_i_stats" not in agent:
        agent["critic_i_stats"] = [(torch.full_like(mean, nan), torch.full_like(var, nan)) for mean, var in layers]
    return agent


def _critic_bn_layers(agent: Mapping[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (running mean, running variance) of each critic BN layer in ``agent``, in the critic's module order."""
    critic = agent.get("critic") or {}
    means = [key for key in critic if key.endswith("running_mean")]
    return [(critic[key], critic[key.removesuffix("mean") + "var"]) for key in means]


def _from_chw_feature_order(agent: dict[str, Any]) -> dict[str, Any]:
    """Rearrange the trunk weights (and their optimizer moments) of a (C, H, W)-order agent state. The side of the
    encoder's square output is read off the trunk's inputs, which are all of it."""
    side = isqrt(agent["actor"]["trunk.0.weight"].shape[1] // Encoder.CHANNELS)
    chw = (Encoder.CHANNELS, side, side)
    for net in ("actor", "critic", "critic_target"):
        weights = dict(agent[net])
        weights["trunk.0.weight"] = chw_to_hwc_columns(weights["trunk.0.weight"], chw)
        agent[net] = weights
    for opt in ("actor_opt", "critic_opt"):  # the trunk weight is each optimizer's first parameter
        opt_state = {**agent[opt], "state": dict(agent[opt]["state"])}
        first = opt_state["param_groups"][0]["params"][0]
        if first in opt_state["state"]:
            opt_state["state"][first] = {
                key: chw_to_hwc_columns(value, chw) if torch.is_tensor(value) and value.dim() == 2 else value
                for key, value in opt_state["state"][first].items()
            }
        agent[opt] = opt_state
    agent["feature_order"] = FEATURE_ORDER
    return agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.checkpoint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("upgrade", help="convert checkpoints of older layouts in a store you trust")
    convert.add_argument("root", type=Path, help="a trial directory, a grid's directory or a results directory")
    verify_cmd = commands.add_parser("verify", help="check every checkpoint under a directory")
    verify_cmd.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    if args.command == "upgrade":
        print(f"{upgrade(args.root)} checkpoint(s) converted")
        return 0
    bad = 0
    for directory in sorted({p.parent for p in args.root.rglob(STATE_FILE)}):
        try:
            manifest = verify(directory)
            print(f"ok       {directory} (frame {manifest['frame']})")
        except CheckpointError as err:
            bad += 1
            print(f"unusable {err}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
