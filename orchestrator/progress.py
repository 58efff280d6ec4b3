"""Live view of a running sweep: a Ray Tune callback on the driver.

Prints one line when a trial starts, finishes, fails or is retried, and a table
of the running trials every ``every_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from orchestrator import store
from orchestrator.report import fmt_duration

EVAL_KEY = "eval/episode_return"
FPS_KEY = "perf/fps"


def _out(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


class ProgressView(tune.Callback):
    """Prints progress of the trials of one Ray experiment.  Picklable (Tune saves callbacks with its state)."""

    def __init__(self, specs: Mapping[str, Mapping[str, Any]], every_s: float = 30.0):
        self.specs = {tid: {"cell": s["meta"]["cell_name"], "task": s["meta"]["task"], "seed": s["meta"]["seed"],
                            "frames": int(s["config"]["num_frames"]), "out_dir": s["out_dir"]}
                      for tid, s in specs.items()}
        self.every_s = every_s
        self.reset()

    def reset(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.started_at = time.time()
        self.last_table = time.time()
        self.finished = 0
        self.attempted: set[str] = set()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.reset()  # a restored experiment starts a new view

    # ---------------------------------------------------------------- helpers
    def _tid(self, trial: Any) -> str:
        return str(trial.config["trial"]["trial_id"])

    def _label(self, tid: str) -> str:
        spec = self.specs.get(tid, {})
        return f"{spec.get('cell', tid)} | {spec.get('task', '?')} | seed {spec.get('seed', '?')}"

    def _count(self) -> str:
        return f"[{self.finished}/{len(self.specs)}]"

    # ---------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._tid(trial)
        if tid not in self.specs:  # a restored experiment re-lists trials the store has: they return at once
            return
        self.attempted.add(tid)
        entry = self.state.setdefault(tid, {"frame": 0, "eval": None, "fps": None})
        entry.update(status="running", since=time.time())
        _out(f"  start    {self._label(tid)}  ({tid})")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        entry = self.state.setdefault(self._tid(trial), {"frame": 0, "eval": None, "fps": None, "since": time.time()})
        if "frame" in result:
            entry["frame"] = int(result["frame"])
        if result.get(EVAL_KEY) is not None:
            entry["eval"] = float(result[EVAL_KEY])
        if result.get(FPS_KEY) is not None:
            entry["fps"] = float(result[FPS_KEY])

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
        tid = self._tid(trial)
        if tid not in self.specs:
            return
        self.finished += 1
        self.state.setdefault(tid, {})["status"] = "done"
        _out(self._finish_line(tid))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._tid(trial)
        _out(self._finish_line(tid, "retry") + " (crashed; Ray restarts it from its checkpoint)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tid = self._tid(trial)
        if tid not in self.specs:
            return
        self.finished += 1
        self.state.setdefault(tid, {})["status"] = "error"
        error = record_process_death(Path(self.specs[tid]["out_dir"]), trial)
        _out(self._finish_line(tid, "FAILED") + (f": {error}" if error else "")
             + f" (Ray's trial directory: {getattr(trial, 'path', None) or trial.local_path})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.time()
        if now - self.last_table < self.every_s:
            return
        self.last_table = now
        # Ray creates trials lazily (max_concurrent), so count against the full list of this experiment
        running = Counter(t.status for t in trials if self._tid(t) in self.specs).get("RUNNING", 0)
        waiting = max(0, len(self.specs) - running - self.finished)
        _out(f"[{time.strftime('%H:%M:%S')}] {running} running, {waiting} waiting, {self.finished} finished of "
             f"{len(self.specs)} | elapsed {fmt_duration(now - self.started_at)}")
        rows = [(self._tid(t), t) for t in trials if t.status == "RUNNING" and self._tid(t) in self.specs]
        for tid, _ in rows:
            entry, spec = self.state.get(tid, {}), self.specs.get(tid, {})
            frame, total = entry.get("frame", 0), spec.get("frames", 0) or 1
            fps = entry.get("fps")
            eta = fmt_duration((total - frame) / fps) if fps else "?"
            eval_text = f"{entry['eval']:8.1f}" if entry.get("eval") is not None else "       -"
            _out(f"    {spec.get('cell', tid)[:34]:34s} {spec.get('task', '')[:18]:18s} s{spec.get('seed', '')!s:<3} "
                 f"{frame:>9,}/{total:<9,} {100 * frame / total:3.0f}%  eval {eval_text}  "
                 f"{(f'{fps:.0f}' if fps else '-'):>5} fps  eta {eta}")


def record_process_death(out_dir: Path, trial: Any) -> str:
    """The store's error for a trial Ray gave up on; fills it in when the process died without writing one.

    The trainable records every failure it sees; a process killed from outside (out of
    memory, a lost node) leaves ``running`` behind, which would read as "still going".
    """
    from agent.sinks import read_status, write_status

    status = read_status(out_dir) or {}
    if status.get("status") != "running":
        return str(status.get("error") or "")
    error_file = getattr(trial, "error_file", None)
    ray_error = ""
    if error_file and Path(error_file).exists():
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        ray_error = lines[-1] if lines else ""
    status.update(status="failed", error=f"the trial process died: {ray_error or 'no error report'}"
                                         + (f" (Ray's report: {error_file})" if error_file else ""))
    write_status(out_dir, status)
    return status["error"]
