"""The dry run's text of a plan (``bnsweep sweep --dry-run``): the trial table, the schedule per task, counts,
packs, frames, the memory and disk verdicts and the time estimate, all from the plan (nothing is read again)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from contract import config as agent_config
from contract import store
from orchestrator.grid import Grid
from orchestrator.packing import fmt_bytes, max_members
from orchestrator.plan import DiskVerdict, Plan, memory_breakdown, pack_key_text
from orchestrator.report import fmt_duration


def format_plan(plan: Plan) -> str:
    """The dry run's printout: the trial table, schedule, counts, packs, frames, memory, disk and estimate."""
    grid, results, states, pending, packs = plan.grid, plan.results, plan.states, plan.pending, plan.packs
    lines = [
        f"grid {grid.name} ({grid.path}), profile {grid.profile}"
        + (f" (profiles: {', '.join(grid.profiles)})" if grid.profiles else " (no profiles: the grid as written)")
    ]
    if grid.description:
        lines.append(f"  {grid.description}")
    header = (
        f"{'#':>4}  {'trial_id':12}  {'cell':38} {'task':20} {'seed':>4} {'frames':>11} {'pack':>5}  "
        f"{'resources':14} state"
    )
    lines += [header, "-" * len(header)]
    resources = f"cpu {grid.cpus_per_trial:g}" + (f" gpu {grid.gpus_per_trial:g}" if grid.gpus_per_trial else "")
    pack_of = {m.trial_id: p.number for p in packs for m in p.members}
    for i, t in enumerate(grid.trials, 1):
        state: str = states[t.trial_id].state
        if state in (store.RUNNING, store.FAILED):
            state += f" @ {states[t.trial_id].done_frame:,}"
        pack = str(pack_of.get(t.trial_id, "-"))
        lines.append(
            f"{i:>4}  {t.trial_id:12}  {t.cell_name[:38]:38} {t.task[:20]:20} {t.seed:>4} {t.num_frames:>11,} "
            f"{pack:>5}  {resources:14} {state}"
        )
    lines += schedule_lines(grid)
    started = [t for t in pending if states[t.trial_id].state != store.NEW]
    lines.append(
        f"cells: {len(grid.cells)}, tasks: {len(grid.tasks)}, seeds: {len(grid.seeds)} -> {len(grid.trials)} trials; "
        f"{len(grid.trials) - len(pending)} done, {len(pending)} to run ({len(started)} of them resume from a "
        "checkpoint)"
    )
    if grid.pack > 1 and packs:
        sizes = Counter(p.size for p in packs)
        lines.append(
            f"packs: {len(pending)} trials to run in {len(packs)} pack{'s' if len(packs) != 1 else ''} "
            f"of at most {grid.pack} "
            f"({', '.join(f'{n} x {k}' for k, n in sorted(sizes.items(), reverse=True))} members; "
            f"{pack_key_text(grid)}); one Ray trial and one process per pack, {resources} each"
        )
        lines.append(f"  {'pack':>4}  {'pack_id':17} {'size':>4} {'from frame':>11} {'memory':>10}  members")
        for p in packs:
            lines.append(
                f"  {p.number:>4}  {p.pack_id:17} {p.size:>4} {p.resume_frame:>11,} {fmt_bytes(p.memory_bytes):>10}  "
                f"{' '.join(p.trial_ids)}"
            )
    total = sum(t.num_frames for t in grid.trials)
    to_run = sum(max(0, t.num_frames - states[t.trial_id].done_frame) for t in pending)
    lines.append(f"frames: {to_run:,} to run (grid total {total:,})")
    if packs:
        lines.append(memory_line(plan))
    if plan.disk is not None:
        lines += disk_lines(plan.disk, grid, results)
    lines.append(
        f"estimated wall time: {fmt_duration(plan.estimate.wall_s)}" + (" (nothing to run)" if not pending else "")
    )
    lines += plan.estimate.notes if pending else ()
    target = f"the Ray cluster at {plan.address}" if plan.address else "a local Ray instance"
    lines.append(f"would run on {target}; results in {store.grid_dir(results, grid.name)}")
    return "\n".join(lines)


def memory_line(plan: Plan) -> str:
    largest = max(plan.packs, key=lambda p: p.memory_bytes)
    unit = f"a pack of {largest.size}" if largest.size > 1 else "a trial"
    memory = plan.memory.memory
    verdict = (
        f"fits {plan.memory.machine} ({fmt_bytes(memory)}; at most "
        f"{min(max_members(p.members[0].config, memory) for p in plan.packs)} such trials per process)"
        if memory is not None
        else plan.memory.machine
    )
    return f"memory: {unit} needs up to {fmt_bytes(largest.memory_bytes)} ({memory_breakdown(largest)}); {verdict}"


def disk_lines(disk: DiskVerdict, grid: Grid, results: Path) -> list[str]:
    """The ``disk:`` line (the store's planned peak) and a ``warning:`` when the results filesystem has less free
    space than that."""
    plan, free, measured = disk.plan, disk.free, disk.measured
    unit = "pack(s)" if grid.pack > 1 else "trial(s)"
    lines = [
        f"disk: the store grows by up to {fmt_bytes(plan.total)} ({plan.total:,} bytes) at its peak with "
        f"{plan.running_packs} {unit} at a time ({disk.why}): {plan.breakdown()}; "
        f"{fmt_bytes(free)} free on the results filesystem ({measured})"
    ]
    if not disk.fits:
        lines.append(
            f"warning: the planned store does not fit: {results} needs up to {plan.total:,} bytes "
            f"({fmt_bytes(plan.total)}) but its filesystem has {free:,} bytes free ({fmt_bytes(free)}, "
            f"measured at {measured}); trials would fail when the disk fills: free space, choose another "
            f"--results, or shrink the checkpoints (fewer frames or a smaller replay_capacity, "
            f"checkpoint_replay: false, ray_checkpoints: false on a shared store)"
        )
    return lines


def schedule_lines(grid: Grid) -> list[str]:
    """One line per task: its resolved frames, exploration std schedule and the other keys its task-group
    preset sets (values as the trials resolved them, all distinct values when cells differ)."""
    lines = ["schedule per task (task-group preset as resolved; frames, std schedule, other preset keys):"]
    for task in grid.tasks:
        trials = [t for t in grid.trials if t.task == task]
        if not trials:
            continue
        config = trials[0].config
        presets = str(config.get("task_presets", "drqv2")) if config.get("use_task_presets", True) else "no preset"
        preset_keys = agent_config.task_preset(task, presets) if presets != "no preset" else {}
        keys = ["num_frames", "stddev_schedule"]
        keys += [k for k in preset_keys if k not in keys]
        shown = []
        for key in keys:
            values = sorted({t.config[key] for t in trials}, key=str)
            text = "/".join(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in values)
            shown.append(f"{'frames' if key == 'num_frames' else key} {text}")
        lines.append(f"  {task} ({agent_config.task_group(task)}, {presets}): {', '.join(shown)}")
    return lines
