"""The single-machine fallback (issue #17, item 6): a sweep's plan run without Ray, its packs one after another in
this process (``bnsweep sweep --in-process``).

For a machine that has no Ray and cannot install it (the lent GPU box). Ray stays the orchestrator everywhere
else: this runs the same plan (``orchestrator.plan``: the same packs, trial ids and directories), writes the same store
(each member's ``trial.json``, ``config.yaml``, ``metrics.csv``, ``status.json``, checkpoints) through the same
worker (``agent.train.run_pack``), so ``bnsweep figures`` and analysis read it as any other. What it does not do:
run packs side by side, retry a failed pack (a rerun resumes it from its checkpoints, as after any stop), or
write W&B runs (W&B is a view; ``wandb sync`` nothing).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from agent.train import run_pack
from contract import store
from contract.config import build_config
from orchestrator.packing import member_meta
from orchestrator.plan import Plan


def run_plan(plan: Plan) -> int:
    """Train the plan's packs (its unfinished trials) one after another; returns how many member trials were
    started."""
    results, grid_name, packs = plan.results, plan.grid.name, plan.packs
    launched = 0
    for pack in packs:
        todo = pack.members
        out_dirs = [store.trial_dir(results, grid_name, m.trial_id) for m in todo]
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        for member, out_dir in zip(todo, out_dirs):
            out_dir.mkdir(parents=True, exist_ok=True)
            store.write_trial_meta(
                out_dir, member_meta(member.meta(), pack.pack_id, pack.trial_ids, started_at, runner="in-process")
            )
        print(f"pack {pack.number}/{len(packs)} ({pack.pack_id}): {len(todo)} trial(s) ...", flush=True)
        start = time.perf_counter()
        try:
            statuses = run_pack([build_config(m.config) for m in todo], out_dirs)
        except store.ForeignTrialDir as err:  # nothing was written there: that directory is another trial's
            print(f"error: pack {pack.pack_id}: {err}; skipped", file=sys.stderr)
            continue
        launched += len(todo)
        ended = ", ".join(f"{m.trial_id} {s.state}" for m, s in zip(todo, statuses))
        print(f"pack {pack.number}/{len(packs)}: {ended} ({time.perf_counter() - start:.0f} s)", flush=True)
        store_errors = [s for s in statuses if s.store_error]
        if store_errors:  # every later pack would hit the same disk
            print(f"error: the result store refused a write: {store_errors[0].error}", file=sys.stderr)
            break
    return launched
