"""Grid format, expansion, trial identity and validation (no Ray: these run in seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from orch_helpers import grid_dict, run_cli, write_grid

from agent.bn_modes import ALL_BN_MODES
from contract import store
from orchestrator import REPO_ROOT, SWEEPS_DIR
from orchestrator.grid import GridError, available_grids, load_grid

SPEC_GRIDS = (
    "critic_i_mode",
    "bn_modes",
    "buffer_mixing",
    "target_bn_stats",
    "learning_rate",
    "optimizer",
    "exploration",
    "normalization",
    "smoke",
)


# ------------------------------------------------------------------ shipped grids
def test_every_spec_grid_exists_with_both_profiles() -> None:
    assert set(SPEC_GRIDS) <= set(available_grids())
    for name in SPEC_GRIDS:
        data = yaml.safe_load((SWEEPS_DIR / f"{name}.yaml").read_text())
        assert {"local", "paper"} <= set(data["profiles"]), name
        for profile in ("local", "paper"):
            grid = load_grid(name, profile)  # full validation, every trial through build_config
            assert grid.trials, (name, profile)
            assert len({t.trial_id for t in grid.trials}) == len(grid.trials)


def test_default_grid_cells() -> None:
    grid = load_grid("critic_i_mode", "local")
    assert grid.cells == ("critic_i=T", "critic_i=E", "Origin")
    assert len(grid.trials) == 15 and grid.seeds == (1, 2, 3, 4, 5) and grid.max_concurrent == 2
    by_cell = {t.cell_name: t for t in grid.trials if t.seed == 1}
    assert by_cell["critic_i=T"].config["bn_mode"] == "TTTTT"
    assert by_cell["critic_i=E"].config["bn_mode"] == "TTETT"
    origin = by_cell["Origin"].config
    assert (origin["actor_norm"], origin["critic_norm"], origin["bn_mode"]) == ("none", "none", None)
    assert all(t.config["obs_type"] == "states" and t.config["device"] == "cpu" for t in grid.trials)
    assert all(t.config["torch_threads"] == 1 for t in grid.trials)
    # the keys the grid varies, with resolved values (Origin's mode is null, not absent)
    assert by_cell["Origin"].axes == {"critic_i": None, "bn_mode": None, "actor_norm": "none", "critic_norm": "none"}
    assert by_cell["critic_i=E"].axes == {
        "critic_i": "E",
        "bn_mode": "TTETT",
        "actor_norm": "batch_norm",
        "critic_norm": "batch_norm",
    }


def test_paper_profile_is_the_papers_protocol() -> None:
    grid = load_grid("critic_i_mode", "paper")
    assert grid.tasks == ("hopper_hop",) and len(grid.seeds) >= 5
    assert grid.gpus_per_trial > 0
    config = grid.trials[0].config
    assert config["obs_type"] == "pixels" and config["device"] == "cuda" and config["num_frames"] == 10_100_000
    assert config["hidden_dim"] == 1024  # the paper's width


def test_bn_modes_preset_gives_all_32() -> None:
    grid = load_grid("bn_modes", "local")
    assert sorted(t.config["bn_mode"] for t in grid.trials) == sorted(ALL_BN_MODES)


def test_normalization_crosses_methods_and_tasks() -> None:
    grid = load_grid("normalization", "local")
    assert len(grid.trials) == 4 * len(grid.tasks) * len(grid.seeds)
    names = {t.cell_name for t in grid.trials}
    assert "method=MA-BN @ cartpole_swingup" in names  # tasks in the cell name when there are several
    assert {t.variant for t in grid.trials} == {"method=Origin", "method=LayerNorm", "method=BN", "method=MA-BN"}


# ------------------------------------------------------------------ identity
def test_trial_id_ignores_placement_and_cell_id_ignores_seed(tmp_path: Path) -> None:
    cpu = load_grid(str(write_grid(tmp_path, "a.yaml", grid_dict("g", seeds=[1, 2]))), "local")
    gpu_grid = grid_dict("g", seeds=[1, 2], resources={"cpu": 2, "gpu": 0.5})
    gpu = load_grid(str(write_grid(tmp_path, "b.yaml", gpu_grid)), "local")
    assert [t.trial_id for t in cpu.trials] == [t.trial_id for t in gpu.trials]
    assert gpu.trials[0].config["device"] == "cuda" and gpu.trials[0].config["torch_threads"] == 2
    seeds = {t.seed: t for t in cpu.trials if t.config["bn_mode"] == "TTETT"}
    assert seeds[1].cell_id == seeds[2].cell_id and seeds[1].trial_id != seeds[2].trial_id
    assert store.trial_id(seeds[1].config) == seeds[1].trial_id and len(seeds[1].trial_id) == 12


def test_yaml_number_strings_resolve_to_the_same_trial(tmp_path: Path) -> None:
    # PyYAML reads 1e-4 as text: it must still be the same trial as 0.0001
    text = yaml.safe_dump(grid_dict("g", modes=["TTETT"])).replace("batch_size: 32", "batch_size: 32\n  lr: 1e-4")
    as_text = tmp_path / "text.yaml"
    as_text.write_text(text)
    as_float = write_grid(
        tmp_path, "float.yaml", grid_dict("g", modes=["TTETT"], base={**grid_dict("g")["base"], "lr": 0.0001})
    )
    assert load_grid(str(as_text), "local").trials[0].trial_id == load_grid(str(as_float), "local").trials[0].trial_id


def test_profiles_merge_base_axes_and_frames(tmp_path: Path) -> None:
    grid = grid_dict("g", modes=list(ALL_BN_MODES[:4]))
    grid.pop("frames")
    grid["profiles"] = {
        "local": {"frames": 3000, "axes": {"bn_mode": ["TTETT"]}, "base": {"hidden_dim": 64}},
        "paper": {"frames": {"easy": 5000, "medium": 9000}, "tasks": ["cartpole_swingup", "hopper_hop"]},
    }
    path = write_grid(tmp_path, "p.yaml", grid)
    local = load_grid(str(path), "local")
    assert [t.config["bn_mode"] for t in local.trials] == ["TTETT"]
    assert local.trials[0].config["hidden_dim"] == 64 and local.trials[0].num_frames == 3000
    paper = load_grid(str(path), "paper")
    frames = {t.task: t.num_frames for t in paper.trials}
    assert frames == {"cartpole_swingup": 5000, "hopper_hop": 9000}
    assert len(paper.trials) == 4 * 2


def test_seed_major_order(tmp_path: Path) -> None:
    grid = load_grid(str(write_grid(tmp_path, "g.yaml", grid_dict("g", seeds=[1, 2, 3]))), "local")
    assert [t.seed for t in grid.trials] == [1, 1, 2, 2, 3, 3]  # a partial sweep has every cell early


# ------------------------------------------------------------------ bad grids
BAD_GRIDS = [
    # (id, change to the tiny grid, expected key path, expected value text, expected "allowed" text)
    ("unknown-top-key", lambda g: g.update(axis=g.pop("axes")), "axis", "'axis'", "did you mean axes"),
    (
        "unknown-config-key",
        lambda g: g["base"].update(hiden_dim=64),
        "base.hiden_dim",
        "'hiden_dim'",
        "did you mean hidden_dim",
    ),
    ("wrong-type", lambda g: g["base"].update(hidden_dim="wide"), "base.hidden_dim", "'wide'", "expected int"),
    (
        "mode-letters",
        lambda g: g["axes"].update(bn_mode=["TTXTT"]),
        "axes.bn_mode[0]",
        "'TTXTT'",
        "T (train) or E (eval)",
    ),
    (
        "mode-length",
        lambda g: g["axes"].update(bn_mode=["TTETT", "TTTT"]),
        "axes.bn_mode[1]",
        "'TTTT'",
        "must be 5 letters",
    ),
    (
        "bad-norm",
        lambda g: g.update(cells=[{"name": "X", "critic_norm": "batch"}]),
        "cells[0].critic_norm",
        "'batch'",
        "allowed: none, layer_norm, batch_norm",
    ),
    (
        "bad-optimizer",
        lambda g: g["axes"].update(optim={"SGD": {"optimizer": "rmsprop"}}),
        "axes.optim.SGD.optimizer",
        "'rmsprop'",
        "allowed: adam, sgd",
    ),
    (
        "unknown-task",
        lambda g: g.update(tasks=["cartpole_swingupp"]),
        "tasks[0]",
        "'cartpole_swingupp'",
        "did you mean cartpole_swingup",
    ),
    ("empty-axis", lambda g: g["axes"].update(bn_mode=[]), "axes.bn_mode", "empty axis", "at least one value"),
    (
        "duplicate-cells",
        lambda g: g.update(cells=[{"name": "again", "bn_mode": "TTETT"}]),
        "duplicate cells",
        "cells[0] (again)",
        "same trial config",
    ),
    (
        "duplicate-axis-value",
        lambda g: g["axes"].update(bn_mode=["TTETT", "TTETT"]),
        "axes.bn_mode[1]",
        "'TTETT'",
        "duplicate value",
    ),
    (
        "cross-key-rule",
        lambda g: g.update(cells=[{"name": "O", "actor_norm": "none", "critic_norm": "none", "bn_mode": "TTETT"}]),
        "cells[0] (O)",
        "bn_mode='TTETT'",
        "needs actor_norm or critic_norm = batch_norm",
    ),
    (
        "mix-in-eval-mode",
        lambda g: g["base"].update(buffer_mix_ratio=0.5),
        "axes (bn_mode=TTETT)",
        "buffer_mix_ratio=0.5",
        "Critic-I = E",
    ),
    ("managed-key", lambda g: g["base"].update(seed=3), "base.seed", "'seed'", "`seeds`"),
    ("duplicate-seed", lambda g: g.update(seeds=[1, 2, 1]), "seeds[2]", "1", "duplicate seed"),
    (
        "bad-resources",
        lambda g: g.update(resources={"cpu": 1, "gpu": -1, "ram": 4}),
        "resources.gpu",
        "-1",
        "allowed: cpu, gpu",
    ),
    (
        "bad-wandb-mode",
        lambda g: g.update(wandb={"mode": "sometimes"}),
        "wandb.mode",
        "'sometimes'",
        "allowed: online, offline, disabled",
    ),
    ("unknown-preset", lambda g: g["axes"].update(bn_mode="most"), "axes.bn_mode", "'most'", "presets: all"),
    (
        "out-of-range",
        lambda g: g["base"].update(discount=1.5),
        "base.discount",
        "discount=1.5",
        "allowed range is [0.0, 1.0]",
    ),
    ("frames-conflict", lambda g: g["base"].update(num_frames=5000), "frames", "num_frames", "use one"),
]


@pytest.mark.parametrize("case", BAD_GRIDS, ids=[c[0] for c in BAD_GRIDS])
def test_bad_grid_is_rejected_before_anything_starts(case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, change, key_path, value_text, allowed_text = case
    grid = grid_dict("bad")
    change(grid)
    path = write_grid(tmp_path, "bad.yaml", grid)
    results = tmp_path / "results"
    code, out, err = run_cli(
        capsys, "--grid", str(path), "--results", str(results), "--figures", str(tmp_path / "figures")
    )
    assert code == 2, out + err
    assert str(path) in err and key_path in err and value_text in err and allowed_text in err, err
    assert "nothing was launched" in err
    assert not results.exists()  # no result touched, not even the grid directory


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    grid = grid_dict("bad", tasks=["nope_task"])
    grid["base"]["hiden_dim"] = 1
    grid["axes"]["bn_mode"] = ["XXXXX"]
    with pytest.raises(GridError) as info:
        load_grid(str(write_grid(tmp_path, "bad.yaml", grid)), "local")
    assert len(info.value.messages) == 3


def test_duplicate_yaml_key_and_missing_profile(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("axes:\n  bn_mode: [TTETT]\nseeds: [1]\nseeds: [2]\n")
    code, _, err = run_cli(capsys, "--grid", str(path), "--results", str(tmp_path / "r"))
    assert code == 2 and "duplicate key 'seeds'" in err and "line 3" in err
    with_profiles = write_grid(tmp_path, "p.yaml", grid_dict("p", profiles={"local": {"seeds": [3]}}))
    code, _, err = run_cli(capsys, "--grid", str(with_profiles), "--profile", "paper", "--results", str(tmp_path / "r"))
    assert code == 2 and "no profile 'paper'" in err and "its profiles: local" in err


def test_unknown_grid_name_lists_the_grids(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "--grid", "critic_i_mod", "--results", str(tmp_path / "r"))
    assert code == 2 and "did you mean critic_i_mode" in err and "bn_modes" in err


def test_exit_code_of_the_real_command(tmp_path: Path) -> None:
    path = write_grid(tmp_path, "bad.yaml", grid_dict("bad", tasks=["nope"]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.sweep",
            "--grid",
            str(path),
            "--dry-run",
            "--results",
            str(tmp_path / "r"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "tasks[0]: 'nope'" in proc.stderr


def test_cell_names_spell_values_as_the_figures_do() -> None:
    """One spelling of a config value (contract.store.format_value) in cell names, W&B groups and figure labels."""
    grid = load_grid("learning_rate", "paper")
    assert {t.config["lr"] for t in grid.trials} == {5e-5, 7.5e-5, 1e-4, 2e-4, 5e-4, 1e-3}
    for trial in grid.trials:
        assert f"lr={store.format_value(trial.config['lr'])}" in trial.variant
    assert any("lr=7.5e-5" in t.variant for t in grid.trials)
