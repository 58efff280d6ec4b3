"""A sweep plans once (issue #20): every trial's status.json, and an unfinished trial's checkpoint manifest, is read
once before anything runs, by the dry run and by a real run alike."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from orch_helpers import grid_dict, run_cli, write_grid

from contract import checkpoints, store
from contract.store import TrialStatus, write_status
from orchestrator import in_process
from orchestrator.grid import TrialSpec, load_grid


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Every JSON file the contract reads, by path: all status and manifest readers go through these two."""
    reads: Counter[Path] = Counter()
    for module in (store, checkpoints):
        real = module.read_json_object

        def counting(path: Path, real=real):  # noqa: ANN001, ANN202 - the wrapped reader's own signature
            reads[Path(path)] += 1
            return real(path)

        monkeypatch.setattr(module, "read_json_object", counting)
    return reads


def _finished(results: Path, trial: TrialSpec) -> Path:
    directory = store.trial_dir(results, trial.grid, trial.trial_id)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(trial.config))
    write_status(directory, TrialStatus("running"))
    write_status(directory, TrialStatus("completed", frame=trial.num_frames, wall_time_s=trial.num_frames / 500))
    return directory


def _failed_at(results: Path, trial: TrialSpec, frame: int) -> Path:
    """A trial that failed after a checkpoint at ``frame`` (only its manifest: the planner reads nothing else)."""
    directory = store.trial_dir(results, trial.grid, trial.trial_id)
    (directory / checkpoints.LATEST).mkdir(parents=True)
    (directory / checkpoints.LATEST / checkpoints.MANIFEST_FILE).write_text(json.dumps({"format": 2, "frame": frame}))
    write_status(directory, TrialStatus("running"))
    write_status(directory, TrialStatus("failed", frame=frame, error="boom"))
    return directory


def _store_with_every_state(tmp_path: Path) -> tuple[Path, Path, list[Path], Path]:
    """Four trials: one finished, one failed after a checkpoint, two new. Returns grid, results, trial dirs, the
    failed one's manifest."""
    path = write_grid(tmp_path, "g.yaml", grid_dict("once", seeds=[1, 2], frames=3000))
    results = tmp_path / "results"
    grid = load_grid(str(path), "local")
    _finished(results, grid.trials[0])
    failed = _failed_at(results, grid.trials[1], 2000)
    dirs = [store.trial_dir(results, grid.name, t.trial_id) for t in grid.trials]
    return path, results, dirs, failed / checkpoints.LATEST / checkpoints.MANIFEST_FILE


def _planning_reads(reads: Counter[Path], dirs: Sequence[Path], manifest: Path) -> tuple[list[int], int]:
    return [reads[d / store.STATUS_FILE] for d in dirs], reads[manifest]


def test_a_dry_run_reads_each_status_and_manifest_once(tmp_path: Path, capsys, monkeypatch) -> None:
    path, results, dirs, manifest = _store_with_every_state(tmp_path)
    reads = _count_reads(monkeypatch)
    code, out, err = run_cli(capsys, "--grid", str(path), "--results", str(results), "--dry-run")
    assert code == 0, err
    assert "4 trials; 1 done, 3 to run (1 of them resume from a checkpoint)" in out
    assert "failed @ 2,000" in next(line for line in out.splitlines() if dirs[1].name in line)
    # the measured rate comes from the finished trial's status as the plan read it
    assert "frames/s per trial, median of 1 finished trials" in out
    assert _planning_reads(reads, dirs, manifest) == ([1, 1, 1, 1], 1)


def test_a_real_run_reads_each_status_and_manifest_once_before_it_trains(tmp_path: Path, capsys, monkeypatch) -> None:
    path, results, dirs, manifest = _store_with_every_state(tmp_path)
    reads = _count_reads(monkeypatch)
    at_first_pack: list[tuple[list[int], int]] = []
    at_own_pack: dict[Path, int] = {}

    def run_pack(configs: Sequence, out_dirs: Sequence[Path]) -> list[TrialStatus]:
        """The worker's end as the store sees it, without training: the reads so far are the sweep's own."""
        if not at_first_pack:
            at_first_pack.append(_planning_reads(reads, dirs, manifest))
        statuses = [TrialStatus("completed", frame=c.num_frames, wall_time_s=1.0) for c in configs]
        for out_dir, status in zip(out_dirs, statuses):
            at_own_pack[out_dir] = reads[out_dir / store.STATUS_FILE]
            write_status(out_dir, TrialStatus("running"))
            write_status(out_dir, status)
        return statuses

    monkeypatch.setattr(in_process, "run_pack", run_pack)
    code, out, err = run_cli(
        capsys, "--grid", str(path), "--results", str(results), "--in-process", "--no-figures", "--no-wandb"
    )
    assert code == 0, err
    assert "4 trials, 1 already done, 3 to run" in out
    # Before the first pack trained, one planning read of every status and of the failed trial's manifest; and
    # no pack re-read the statuses of its members before training them (the plan's packs ran as planned).
    assert at_first_pack == [([1, 1, 1, 1], 1)]
    assert at_own_pack == {d: 1 for d in dirs[1:]}


def test_the_plan_is_one_value_from_typed_options_and_its_text_reads_nothing(tmp_path: Path, monkeypatch) -> None:
    from orchestrator.dry_run import format_plan
    from orchestrator.options import SweepOptions
    from orchestrator.plan import build_plan
    from orchestrator.sweep import parse_args

    path, results, dirs, _ = _store_with_every_state(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the default of --address
    options = parse_args(["--grid", str(path), "--results", str(results), "--dry-run", "--host-memory", "1GiB"])
    assert options == SweepOptions(
        grid=str(path),
        profile="local",
        results=results.resolve(),
        figures=Path("figures").resolve(),
        dry_run=True,
        host_memory=1 << 30,
    )
    grid = load_grid(str(path), "local")
    plan = build_plan(grid, options)
    assert [t.trial_id for t in plan.pending] == [d.name for d in dirs[1:]]
    assert [(p.trial_ids, p.resume_frame) for p in plan.packs] == [
        ([d.name], f) for d, f in zip(dirs[1:], (2000, 0, 0))
    ]
    assert plan.memory.machine == "the host given by --host-memory"
    assert plan.memory.error is not None and "does not fit" in plan.memory.error  # one trial plans 2 GiB
    reads = _count_reads(monkeypatch)
    assert "failed @ 2,000" in format_plan(plan)
    assert not reads  # the dry run's text comes from the plan alone
