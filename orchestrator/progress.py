"""Live view of a running sweep: a Ray Tune callback on the driver.

Prints one line when a trial starts, finishes, fails or is retried, and a table
of the running trials every ``every_s`` seconds, per trial also when trials run
in packs (one Ray trial per pack).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import tune

from agent import metrics
from contract import store
from contract.store import FAILED, RUNNING, read_status, write_status
from orchestrator.report import fmt_duration
from orchestrator.trainable import MEMBER_KEY, MEMBER_STATUS_KEY

EVAL_KEY = metrics.EVAL_RETURN
FPS_KEY = metrics.FPS


def _out(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


class ProgressView(tune.Callback):
    """Prints progress of the trials of one Ray experiment.  Picklable (Tune saves callbacks with its state).

    A Ray trial is a pack of member trials (``orchestrator.trainable``); everything shown is per
    member trial: rows carry the member's trial id, and a member's end is reported when the worker
    ends it (a diverged member finishes while its pack goes on).
    """

    def __init__(self, packs: Mapping[str, Mapping[str, Any]], every_s: float = 30.0):
        self.specs: dict[str, dict[str, Any]] = {}
        self.packs: dict[str, list[str]] = {}
        for pid, pack in packs.items():
            self.packs[pid] = [m["trial_id"] for m in pack["members"]]
            for m in pack["members"]:
                self.specs[m["trial_id"]] = {
                    "cell": m["meta"]["cell_name"],
                    "task": m["meta"]["task"],
                    "seed": m["meta"]["seed"],
                    "frames": int(m["config"]["num_frames"]),
                    "out_dir": m["out_dir"],
                    "pack": pid,
                    "pack_size": len(pack["members"]),
                }
        self.every_s = every_s
        self.reset()

    def reset(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.started_at = time.time()
        self.last_table = time.time()
        self.finished = 0
        self.attempted: set[str] = set()
        self.final: set[str] = set()  # members whose end was printed and counted

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.reset()  # a restored experiment starts a new view

    # ---------------------------------------------------------------- helpers
    def _members(self, trial: Any) -> list[str]:
        """The member trial ids of a Ray trial (a pack) that this view follows."""
        pack = trial.config["pack"]
        return [m["trial_id"] for m in pack["members"] if m["trial_id"] in self.specs]

    def _label(self, tid: str) -> str:
        spec = self.specs.get(tid, {})
        return f"{spec.get('cell', tid)} | {spec.get('task', '?')} | seed {spec.get('seed', '?')}"

    def _count(self) -> str:
        return f"[{self.finished}/{len(self.specs)}]"

    def _entry(self, tid: str) -> dict[str, Any]:
        return self.state.setdefault(tid, {"frame": 0, "eval": None, "fps": None, "since": time.time()})

    # ---------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        members = self._members(trial)  # a restored experiment re-lists trials the store has: they return at once
        pack = trial.config["pack"]
        size = len(pack["members"])
        for tid in members:
            if tid in self.final or store.is_done(Path(self.specs[tid]["out_dir"])):
                continue
            self.attempted.add(tid)
            entry = self._entry(tid)
            entry.update(status="running", since=time.time())
            where = f", pack {pack['pack_id']} of {size}" if size > 1 else ""
            _out(f"  start    {self._label(tid)}  ({tid}{where})")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        tid = result.get(MEMBER_KEY)
        if tid not in self.specs:
            return  # a pack-level report (its checkpoint) or a member of another experiment
        entry = self._entry(tid)
        if "frame" in result:
            entry["frame"] = int(result["frame"])
        if result.get(EVAL_KEY) is not None:
            entry["eval"] = float(result[EVAL_KEY])
        if result.get(FPS_KEY) is not None:
            entry["fps"] = float(result[FPS_KEY])
        status = result.get(MEMBER_STATUS_KEY)
        if status in store.FINISHED_STATUSES and not result.get("skipped"):
            self._finish(tid)
        elif status == store.FAILED:
            entry["status"] = "failed"  # printed when Ray retries the pack or gives up on it

    def _finish(self, tid: str, word: str | None = None, suffix: str = "") -> None:
        if tid in self.final:
            return
        self.final.add(tid)
        self.finished += 1
        self._entry(tid)["status"] = "done"
        _out(self._finish_line(tid, word) + suffix)

    def _finish_line(self, tid: str, word: str | None = None) -> str:
        status = store.trial_state(Path(self.specs[tid]["out_dir"])) if tid in self.specs else "?"
        entry = self.state.get(tid, {})
        parts = [f"{word or status:8s} {self._count()} {self._label(tid)}", f"frame {entry.get('frame', 0)}"]
        if entry.get("eval") is not None:
            parts.append(f"eval return {entry['eval']:.1f}")
        if entry.get("since"):
            parts.append(fmt_duration(time.time() - entry["since"]))
        return "  " + ", ".join(parts)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for tid in self._members(trial):
            if tid in self.attempted:
                self._finish(tid)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for tid in self._members(trial):
            if tid in self.attempted and tid not in self.final:
                _out(self._finish_line(tid, "retry") + " (crashed; Ray restarts it from its checkpoint)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for tid in self._members(trial):
            if tid not in self.attempted or tid in self.final:
                continue
            error = record_process_death(Path(self.specs[tid]["out_dir"]), trial)
            where = getattr(trial, "path", None) or trial.local_path
            self._finish(tid, "FAILED", (f": {error}" if error else "") + f" (Ray's trial directory: {where})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.time()
        if now - self.last_table < self.every_s:
            return
        self.last_table = now
        # Ray creates trials lazily (max_concurrent), so count against the full list of this experiment
        rows = [
            tid
            for t in trials
            if t.status == "RUNNING"
            for tid in self._members(t)
            if tid in self.attempted and tid not in self.final
        ]
        waiting = max(0, len(self.specs) - len(rows) - self.finished)
        packs = sum(1 for t in trials if t.status == "RUNNING" and self._members(t))
        in_packs = f" in {packs} packs" if any(s["pack_size"] > 1 for s in self.specs.values()) else ""
        _out(
            f"[{time.strftime('%H:%M:%S')}] {len(rows)} running{in_packs}, {waiting} waiting, {self.finished} "
            f"finished of {len(self.specs)} | elapsed {fmt_duration(now - self.started_at)}"
        )
        for tid in rows:
            entry, spec = self.state.get(tid, {}), self.specs.get(tid, {})
            frame, total = entry.get("frame", 0), spec.get("frames", 0) or 1
            fps = entry.get("fps")
            eta = fmt_duration((total - frame) / fps) if fps else "?"
            eval_text = f"{entry['eval']:8.1f}" if entry.get("eval") is not None else "       -"
            _out(
                f"    {spec.get('cell', tid)[:34]:34s} {spec.get('task', '')[:18]:18s} s{spec.get('seed', '')!s:<3} "
                f"{frame:>9,}/{total:<9,} {100 * frame / total:3.0f}%  eval {eval_text}  "
                f"{(f'{fps:.0f}' if fps else '-'):>5} fps  eta {eta}"
            )


def record_process_death(out_dir: Path, trial: Any) -> str:
    """The store's error for a trial Ray gave up on; fills it in when the process died without writing one.

    The trainable records every failure it sees; a process killed from outside (out of
    memory, a lost node) leaves ``running`` behind, which would read as "still going".
    """

    status = read_status(out_dir)
    if status is None or status.state != RUNNING:
        return (status.error if status is not None else None) or ""
    error_file = getattr(trial, "error_file", None)
    ray_error = ""
    if error_file and Path(error_file).exists():
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        ray_error = lines[-1] if lines else ""
    error = f"the trial process died: {ray_error or 'no error report'}" + (
        f" (Ray's report: {error_file})" if error_file else ""
    )
    write_status(out_dir, replace(status, state=FAILED, error=error))
    return error
