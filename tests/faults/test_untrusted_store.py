"""A store that others can write into (issue #19, cases 1, 2 and 9): nothing planted in it runs, nothing is
written outside ``--out``, and a hostile or damaged file costs its trial (one warning line), never the store,
a traceback or a hang.  Real sweeps with a real local Ray where the driver is involved, real files otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from contract import store
from orchestrator import REPO_ROOT
from tests.orchestrator.orch_helpers import TINY_BASE


class _Planted:
    """A pickle that, when loaded, creates ``marker``: what an attacker plants as Ray's ``tuner.pkl``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_planted_ray_experiment_is_never_unpickled(tmp_path: Path) -> None:
    """Case 1: an experiment planted in ``<grid>/_ray/`` with the launch record the driver used to trust (its
    fingerprint is a hash of public inputs) and a malicious ``tuner.pkl``.  The sweep runs its trial from the
    store and the pickle is never loaded."""
    grid_path = tmp_path / "planted.yaml"
    grid_path.write_text(
        yaml.safe_dump(
            {
                "name": "planted",
                "base": TINY_BASE,
                "axes": {"bn_mode": ["TTETT"]},
                "tasks": ["cartpole_swingup"],
                "seeds": [1],
                "frames": 2000,
                "resources": {"cpu": 1},
                "max_failures": 0,
            }
        )
    )
    from orchestrator.grid import load_grid

    grid = load_grid(str(grid_path), "local")
    results = (tmp_path / "results").resolve()
    ray_root = results / "planted" / store.RAY_DIR
    experiment = ray_root / "sweep-29991231-235959"
    experiment.mkdir(parents=True)
    marker = tmp_path / "pwned"
    (experiment / "tuner.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    # the fingerprint as the driver computed it before issue #19: anyone who knows the grid can compute it
    blob = json.dumps(
        {
            "results": str(results),
            "wandb": None,
            "resources": grid.resources,
            "max_concurrent": grid.max_concurrent,
            "max_failures": grid.max_failures,
            "pack": grid.pack,
            "payload": "packs-v1",
        },
        sort_keys=True,
    )
    (ray_root / f"{experiment.name}.launch.json").write_text(
        json.dumps(
            {
                "experiment": experiment.name,
                "fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16],
                "trials": [t.trial_id for t in grid.trials],
            }
        )
    )
    args = ["-m", "orchestrator.sweep", "--grid", str(grid_path), "--results", str(results)]
    done = _run([*args, "--no-wandb", "--no-figures", "--progress-every", "0"], tmp_path)
    assert not marker.exists(), "the planted tuner.pkl was unpickled"
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "resuming the Ray experiment" not in done.stdout
    [trial] = grid.trials
    assert store.trial_state(store.trial_dir(results, "planted", trial.trial_id)) == store.COMPLETED


# ------------------------------------------------------------------ case 2: figures write only under --out
def _two_seeds(root: Path, grid: str, meta_grid: object, name: str) -> None:
    from tests.analysis.synthetic_store import write_trial

    for seed in (1, 2):
        meta = {"grid": meta_grid} if meta_grid is not None else None
        write_trial(root, grid, f"{name}{seed}", [0, 100, 200, 300], seed=seed, meta=meta)


def test_figures_write_only_under_out_whatever_trial_json_says(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Case 2: a grid named ``../../escape``, an absolute path or a name with a newline in trial.json is set
    aside with one warning line each; a directory named with a newline is drawn, with its name escaped in
    final.tex's comment; nothing is written outside --out."""
    from analysis.figures import main
    from tests.analysis.synthetic_store import FIGURE_ARGS

    results, out = tmp_path / "results", tmp_path / "deep" / "er" / "figures"
    _two_seeds(results, "good", "good", "g")
    _two_seeds(results, "up", "../../escape", "u")
    _two_seeds(results, "abs", str(tmp_path / "absolute"), "a")
    _two_seeds(results, "nl", "x\ninjected", "n")
    _two_seeds(results, "line\n\\end{tabular}", None, "d")  # no grid in trial.json: the directory's own name
    before = {p for p in tmp_path.rglob("*")}
    assert main(["--results", str(results), "--out", str(out), *FIGURE_ARGS]) == 0
    err = capsys.readouterr().err
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(out in p.parents or p in out.parents or p == out for p in created), sorted(created)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "absolute").exists()
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 6 and all("not a plain name" in line for line in warnings), err  # 3 grids x 2 seeds
    assert "Traceback" not in err
    tex = (out / "line\n\\end{tabular}" / "final.tex").read_text()
    header = [line for line in tex.splitlines() if "Final return per task and cell" in line]
    assert len(header) == 1 and header[0].startswith("% ") and "\\textbackslash{}end\\{tabular\\}" in header[0]


# ------------------------------------------------------------------ case 9: hostile or damaged store files
class Blocked(BaseException):
    """Raised by the alarm: not an OSError (TimeoutError is one), so no reader's error handling swallows it."""


@pytest.fixture
def no_hang() -> Iterator[None]:
    """A reader that blocks (a FIFO opened for reading) fails the test after 20 s instead of hanging it."""

    def stop(signum: int, frame: object) -> None:
        signal.alarm(2)  # and again, should the blocked reader be in a loop
        raise Blocked("a store reader blocked")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _tiny_grid(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "hostile",
                "base": TINY_BASE,
                "axes": {"bn_mode": ["TTTTT", "TTETT", "ETETT", "EEETT"]},
                "tasks": ["cartpole_swingup"],
                "seeds": [1],
                "frames": 2000,
                "resources": {"cpu": 1},
            }
        )
    )
    return path


def test_hostile_store_files_cost_their_trial_never_a_hang_or_traceback(
    tmp_path: Path, no_hang: None, capsys: pytest.CaptureFixture
) -> None:
    """Case 9: FIFOs as status.json and metrics.csv, a frame of inf and of 1e30, a binary metrics.csv and a
    config.yaml that is a list.  The planner's dry run reads the store without blocking; `figures` sets each such
    trial aside with one warning line and draws the rest."""
    from analysis.figures import main as figures
    from orchestrator.grid import load_grid
    from orchestrator.sweep import main as sweep
    from tests.analysis.synthetic_store import FIGURE_ARGS, write_trial

    grid_path = _tiny_grid(tmp_path)
    trials = load_grid(str(grid_path), "local").trials
    results = tmp_path / "results"
    dirs = [store.trial_dir(results, "hostile", t.trial_id) for t in trials]
    for i, (directory, trial) in enumerate(zip(dirs, trials)):
        write_trial(results, "hostile", directory.name, [0, 100, 200], meta={"grid": "hostile"}, **trial.config)
        status = json.loads((directory / "status.json").read_text())
        (directory / "status.json").write_text(json.dumps({**status, "frame": 2000, "wall_time_s": 10.0 + i}))
    os.unlink(dirs[0] / "status.json")
    os.mkfifo(dirs[0] / "status.json")
    os.unlink(dirs[1] / "metrics.csv")
    os.mkfifo(dirs[1] / "metrics.csv")
    (dirs[2] / "config.yaml").write_text("- a list\n- not a mapping\n")
    (dirs[3] / "metrics.csv").write_bytes(bytes(range(256)) * 4)
    for name, frame in (("inf", "inf"), ("huge", "1e30")):
        other = write_trial(results, "other", name, [0, 100, 200], seed=1, meta={"grid": "other"})
        (other / "metrics.csv").write_text((other / "metrics.csv").read_text().replace("\n2000,", f"\n{frame},"))
    for seed in (1, 2):
        write_trial(results, "fine", f"f{seed}", [0, 100, 200, 300], seed=seed, meta={"grid": "fine"})

    code = sweep(["--grid", str(grid_path), "--results", str(results), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0 and "dry run: nothing launched" in captured.out, captured.out + captured.err
    assert "Traceback" not in captured.err

    code = figures(["--results", str(results), "--out", str(tmp_path / "figures"), *FIGURE_ARGS])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    expected = {
        dirs[1].name: "a FIFO, not a regular file",
        dirs[2].name: "not a mapping",
        dirs[3].name: "not text",
        "other/inf": "frame inf is not a whole number",
        "other/huge": "frame 1e+30 is not a whole number",
    }
    for where, what in expected.items():
        assert any(where in line and what in line for line in warnings), (where, what, err)
    assert len(warnings) == len(expected), err  # the FIFO status.json reads as missing: that trial is drawn
    assert (tmp_path / "figures" / "fine" / "final.csv").is_file()
    assert "Traceback" not in err


def test_a_fifo_checkpoint_or_manifest_never_blocks_the_worker(tmp_path: Path, no_hang: None) -> None:
    """Case 9, the worker's side: a FIFO as a checkpoint's state.pt or manifest is a damaged checkpoint."""
    from agent import checkpoint

    checkpoint.save(tmp_path, {"frame": 1000, "step": 500}, 1000, 500)
    os.unlink(tmp_path / checkpoint.LATEST / checkpoint.STATE_FILE)
    os.mkfifo(tmp_path / checkpoint.LATEST / checkpoint.STATE_FILE)
    found = checkpoint.load_latest(tmp_path)
    assert found.state is None and "not a regular file" in found.notes[0]
