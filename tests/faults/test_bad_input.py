"""Input that used to pass validation and then fail or hang (issue #19, case 8): each is refused before anything
starts, in one line naming the file or key and what is allowed; nothing is written.  The real command lines, in
process (no trial runs: every case is refused first)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.orchestrator.orch_helpers import grid_dict, run_cli

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)  # ~330 bytes; 9**9 values once its aliases are expanded


def _train(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str]]:
    from agent.train import main

    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["seed=-1"], "seed"),
        (["seed=4294967296"], "seed"),
        (["config=missing.yaml"], "config=missing.yaml: no such file"),
        (["config=broken.yaml"], "not valid YAML"),
        (["config=duplicate.yaml"], "duplicate key 'lr'"),
        (["config=bomb.yaml"], "alias bomb"),
        (["config=list.yaml"], "expected a mapping of config keys"),
        (["lr=[unclosed"], "lr=[unclosed: not valid YAML"),
    ],
    ids=["negative-seed", "seed-2**32", "missing", "broken", "duplicate", "bomb", "list", "unclosed"],
)
def test_agent_train_refuses_bad_input_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str], says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text("lr: [1e-4\n")
    (tmp_path / "duplicate.yaml").write_text("lr: 1e-4\nlr: 3e-4\n")
    (tmp_path / "bomb.yaml").write_text(BOMB + "description: *i\n")
    (tmp_path / "list.yaml").write_text("- lr\n")
    started = time.perf_counter()
    code, err = _train(capsys, "task=cartpole_swingup", "obs_type=states", *args, f"out={tmp_path / 'out'}")
    assert time.perf_counter() - started < 5
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and says in err[0], err
    assert not (tmp_path / "out").exists()


def _grid(tmp_path: Path, filename: str, **changes: object) -> Path:
    grid = {**grid_dict("bad"), **changes}
    if grid["name"] is None:
        del grid["name"]
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("filename", "changes", "says"),
    [
        ("seed.yaml", {"seeds": [4294967296]}, "seed"),
        ("count.yaml", {"seeds": 1_000_000_000}, "a seed count must be 1 to 1000"),
        ("dots.yaml", {"name": ".."}, "'..' is not a plain grid name"),
        ("..yaml", {"name": None}, "the file name gives the grid name '.'"),
        ("_x.yaml", {"name": None}, "'_x' is not a plain grid name"),
        (".x.yaml", {"name": None}, "'.x' is not a plain grid name"),
        ("cell.yaml", {"cells": [{"name": "a\nb", "bn_mode": "EEEEE"}]}, "holds a control character"),
        ("memory.yaml", {"base": {"obs_type": "states", "hidden_dim": 65536, "batch_size": 65536}}, "does not fit"),
    ],
    ids=["seed-2**32", "seed-count", "name-dots", "file-dots", "file-underscore", "file-hidden", "cell-nl", "memory"],
)
def test_a_grid_that_would_fail_later_is_refused_by_the_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, filename: str, changes: dict, says: str
) -> None:
    path = _grid(tmp_path, filename, **changes)
    code, out, err = run_cli(capsys, "--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run")
    assert code == 2 and says in err, out + err
    assert "Traceback" not in err and not (tmp_path / "results").exists()
    assert all(len(line) < 2100 for line in err.splitlines())


def test_a_grid_anchor_bomb_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + yaml.safe_dump(grid_dict("bomb")) + "description: *i\n")
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "--grid", str(path), "--dry-run", "--results", str(tmp_path / "results"))
    assert time.perf_counter() - started < 5 and code == 2 and "alias bomb" in err, err
