"""Loading synthetic stores into the tidy table, and the final-return rules on cells with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from synthetic_store import BASE_CONFIG, LAYER_NORM, ORIGIN

from agent.metrics import EVAL_RETURN, FRAME, METRIC_NAMES
from analysis import stats
from analysis.store import StoreError, cell_keys, format_value, load_store, method_label
from analysis.summary import Settings, cell_summaries, curves, final_scores, normalized_finals, unnormalizable_tasks

FAST = Settings(reps=500)


# ------------------------------------------------------------------ labels
@pytest.mark.parametrize(
    "overrides, label",
    [
        (ORIGIN, "Origin"),
        (LAYER_NORM, "LayerNorm"),
        ({"actor_norm": "none", "critic_norm": "layer_norm", "bn_mode": None}, "LayerNorm"),
        ({"bn_mode": "TTETT"}, "MA-BN"),
        ({"bn_mode": None}, "MA-BN"),  # the worker resolves an absent mode with batch_norm to MA-BN
        ({"bn_mode": "TTTTT"}, "BN (TTTTT)"),
        ({"bn_mode": "TEETT", "actor_norm": "none"}, "BN TEETT"),
        ({"critic_norm": "batch_renorm", "bn_mode": "TTTTT"}, "BRN TTTTT"),
        ({"actor_norm": "batch_renorm", "bn_mode": None}, "BRN TTETT"),
    ],
)
def test_method_label(overrides, label):
    assert method_label({**BASE_CONFIG, **overrides}) == label


def test_format_value():
    assert [format_value(v) for v in (1e-4, 7.5e-5, 0.25, 1.0, 0.01, "adam", None)] == [
        "1e-4",
        "7.5e-5",
        "0.25",
        "1",
        "0.01",
        "adam",
        "none",
    ]


def test_cell_keys_ignore_seed_placement_and_task_presets():
    configs = [
        {**BASE_CONFIG, "seed": 1, "device": "cpu", "lr": 1e-4},
        {**BASE_CONFIG, "seed": 2, "device": "cuda", "torch_threads": 4, "lr": 1e-4},
        {**BASE_CONFIG, "seed": 1, "lr": 5e-4},
        # walker's preset batch size differs between tasks, but it is not an axis of the grid
        {**BASE_CONFIG, "task": "walker_walk", "batch_size": 512, "lr": 1e-4},
        {**BASE_CONFIG, "task": "walker_walk", "batch_size": 512, "lr": 5e-4},
    ]
    assert cell_keys(configs) == ["lr"]


# ------------------------------------------------------------------ loading
def test_tidy_table(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "critic_i_mode", "a", [0.0, 100.0, 200.0], seed=1)
    trial_writer(root, "critic_i_mode", "b", [0.0, 300.0, 400.0], seed=2, bn_mode="TTTTT")
    store = load_store(root)
    data = store.data
    # one row per trial x log point: 3 eval rows + 2 training rows per trial, kept separate as written
    assert len(data) == 10
    assert {
        "grid",
        "trial",
        "trial_id",
        "cell",
        "method",
        "cell_id",
        "task",
        "seed",
        "status",
        FRAME,
        *METRIC_NAMES,
        "lr",
        "bn_mode",
        "optimizer",
    } <= set(data.columns)
    assert set(data["grid"]) == {"critic_i_mode"}
    assert data.groupby("trial")[EVAL_RETURN].count().to_dict() == {"critic_i_mode/a": 3, "critic_i_mode/b": 3}
    assert list(store.trials["cell"]) == ["BN (TTTTT)", "MA-BN"]  # the paper's order, not alphabetical
    assert list(store.trials["status"]) == ["completed", "completed"]
    assert store.grids == ["critic_i_mode"]


def test_cells_group_seeds_and_name_varying_axes(tmp_path, trial_writer):
    root = tmp_path / "results"
    for seed in (1, 2, 3):
        trial_writer(root, "learning_rate", f"mabn-{seed}", [0, 1], seed=seed, lr=1e-4, torch_threads=seed)
        trial_writer(root, "learning_rate", f"mabn-fast-{seed}", [0, 1], seed=seed, lr=5e-4)
        trial_writer(root, "learning_rate", f"origin-{seed}", [0, 1], seed=seed, lr=1e-4, **ORIGIN)
    trials = load_store(root).trials
    assert trials.groupby("cell").size().to_dict() == {"MA-BN, lr=1e-4": 3, "MA-BN, lr=5e-4": 3, "Origin, lr=1e-4": 3}
    assert trials.groupby("cell")["cell_key"].nunique().max() == 1
    # cell_id (orchestrator-compatible): one per condition and task, the same for all seeds
    assert trials.groupby("cell")["cell_id"].nunique().max() == 1


def test_profiles_in_one_grid_become_the_axis(tmp_path, trial_writer):
    # A local run (states, 256 wide) and a paper run (pixels, 1024 wide) of the same grid in one store: the cells
    # are told apart by the profile, not by a list of every setting the profiles differ in.
    root = tmp_path / "results"
    for seed in (1, 2):
        for profile, extra in (
            ("local", {"obs_type": "states", "hidden_dim": 256}),
            ("paper", {"obs_type": "pixels", "hidden_dim": 1024, "num_frames": 10_000}),
        ):
            for name, norm in (("mabn", {}), ("origin", ORIGIN)):
                meta = {"grid": "critic_i_mode", "trial_id": f"{profile}-{name}-{seed}", "profile": profile}
                trial_writer(
                    root, "critic_i_mode", f"{profile}-{name}-{seed}", [0, 1], seed=seed, meta=meta, **extra, **norm
                )
    trials = load_store(root).trials
    assert trials.groupby("cell").size().to_dict() == {
        "MA-BN, profile=local": 2,
        "MA-BN, profile=paper": 2,
        "Origin, profile=local": 2,
        "Origin, profile=paper": 2,
    }


def test_trial_json_names_grid_and_trial(tmp_path, trial_writer):
    root = tmp_path / "results"
    meta = {
        "grid": "bn_modes",
        "trial_id": "abc123",
        "cell_id": "cell9",
        "cell_name": "TTETT",
        "seed": 1,
        "task": "cartpole_swingup",
        "axes": {"bn_mode": "TTETT"},
    }
    trial_writer(root, "some_dir", "abc123", [0, 5], meta=meta)
    trials = load_store(root).trials
    assert (trials.at[0, "grid"], trials.at[0, "trial_id"], trials.at[0, "cell_id"]) == ("bn_modes", "abc123", "cell9")
    assert trials.at[0, "orchestrator_cell_name"] == "TTETT"


def test_tolerates_running_failed_pending_partial_and_foreign_entries(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "g", "done", [0, 10, 20])
    running = trial_writer(root, "g", "running", [0, 10], status="running")
    with (running / "metrics.csv").open("a") as handle:
        handle.write("2000,1.5,,,0.3")  # a half-written last line while the worker appends
    trial_writer(root, "g", "crashed", [0], status="failed", error="RuntimeError: boom")
    pending = root / "g" / "pending"
    pending.mkdir(parents=True)
    (pending / "config.yaml").write_text(yaml.safe_dump({**BASE_CONFIG, "seed": 9}))
    header_only = trial_writer(root, "g", "header-only", [], status="running")
    assert (header_only / "metrics.csv").read_text().count("\n") == 1
    # Not trials: a checkpoint and a W&B run inside a trial, Ray/orchestrator state, dot-directories, stray files.
    for extra in ("g/done/checkpoint", "g/done/wandb/run-1/files", "_ray/exp", "_sweep", ".cache/x"):
        (root / extra).mkdir(parents=True, exist_ok=True)
        (root / extra / "config.yaml").write_text("not: a trial\n")
    (root / "g" / ".sweep.lock").write_text("")
    (root / "README.txt").write_text("hello")
    store = load_store(root)
    status = dict(zip(store.trials["trial_id"], store.trials["status"], strict=True))
    assert status == {
        "done": "completed",
        "running": "running",
        "crashed": "failed",
        "pending": "new",
        "header-only": "running",
    }
    running_rows = store.data[store.data["trial_id"] == "running"]
    assert list(running_rows[FRAME]) == [0, 1000, 1000]  # the half line was dropped, nothing else
    assert store.trials.set_index("trial_id").at["crashed", "error"] == "RuntimeError: boom"


def test_unreadable_config_is_a_warning_not_a_crash(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "g", "ok", [0, 1])
    bad = root / "g" / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("task: [unclosed\n")
    store = load_store(root)
    assert list(store.trials["trial_id"]) == ["ok"]
    assert any("bad" in w for w in store.warnings)


def test_status_without_metrics_and_missing_status(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial = trial_writer(root, "g", "no-status", [0, 1], status=None)
    assert not (trial / "status.json").exists()
    assert load_store(root).trials.at[0, "status"] == "running"  # metrics but no status yet


def _no_trials(root):
    (root / "grid" / "trial").mkdir(parents=True)
    (root / "grid" / "trial" / "notes.txt").write_text("a directory, but no config.yaml anywhere")
    return root


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "no such directory"),
        (lambda root: root, "is empty"),
        (_no_trials, "not a result store"),
    ],
)
def test_store_errors(tmp_path, make, message):
    root = tmp_path / "store"
    root.mkdir()
    with pytest.raises(StoreError, match=message):
        load_store(make(root))


# ------------------------------------------------------------------ final returns and summaries
def test_final_return_rule(tmp_path, trial_writer):
    root = tmp_path / "results"
    # 10k planned frames, evals every 1k: the last 10% are frames 9k and 10k.
    trial_writer(root, "g", "done", [float(i) for i in range(11)], num_frames=10_000)
    trial_writer(root, "g", "div", [5.0, 50.0, 7.0], status="diverged", num_frames=10_000, seed=2)
    trial_writer(root, "g", "run", [1.0, 2.0], status="running", num_frames=10_000, seed=3)
    store = load_store(root)
    by_trial = final_scores(store, diverged="last").set_index("trial_id")
    assert by_trial.at["done", "value"] == pytest.approx(9.5)  # mean(9, 10)
    assert by_trial.at["done", "n_points"] == 2
    assert by_trial.at["div", "value"] == 7.0  # --diverged last: its last evaluation before divergence
    assert by_trial.at["div", "final_frame"] == 2000
    assert "run" not in by_trial.index  # still running: no final return
    # The default, task_min: the lowest evaluation of the task in the store (done's frame 0), not its own 7 or 5.
    by_trial = final_scores(store).set_index("trial_id")
    assert by_trial.at["div", "value"] == 0.0 and by_trial.at["div", "final_frame"] == 2000
    assert by_trial.at["done", "value"] == pytest.approx(9.5)  # the rule touches diverged trials only
    with pytest.raises(ValueError, match="task_min, last"):
        final_scores(store, diverged="zero")


def test_cell_with_a_diverged_seed(tmp_path, trial_writer):
    root = tmp_path / "results"
    for seed, final in ((1, 100.0), (2, 200.0), (3, 300.0)):
        trial_writer(root, "g", f"s{seed}", [0.0, final], seed=seed)
    trial_writer(root, "g", "s4", [0.0, 50.0], status="diverged", seed=4)
    (summary,) = cell_summaries(load_store(root), Settings(reps=500, diverged="last"))
    # IQM of [50, 100, 200, 300]: one trimmed each side -> mean(100, 200); the diverged seed is not dropped
    assert summary.estimate.point == pytest.approx(150.0)
    assert (summary.n_trials, summary.n_final, summary.n_diverged) == (4, 4, 1)
    assert summary.estimate.low <= 150.0 <= summary.estimate.high


def test_partial_grid(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "g", "a1", [0.0, 10.0, 20.0], seed=1, target_bn_stats="copy")
    trial_writer(root, "g", "b1", [0.0, 5.0], status="running", seed=1, target_bn_stats="soft")
    store = load_store(root)
    summaries = {s.cell: s for s in cell_summaries(store, FAST)}
    assert summaries["MA-BN, target stats=copy"].estimate.point == 20.0
    assert summaries["MA-BN, target stats=copy"].estimate.degenerate  # one seed: no CI
    running = summaries["MA-BN, target stats=soft"]
    assert running.estimate is None and running.n_running == 1
    # the running trial still has a curve up to where it got
    curve = curves(store, EVAL_RETURN, FAST)[("cartpole_swingup", "MA-BN, target stats=soft")]
    assert list(curve[FRAME]) == [0, 1000] and list(curve["point"]) == [0.0, 5.0]


def test_curves_iqm_over_seeds_and_hold_diverged(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "g", "s1", [0.0, 10.0, 20.0, 30.0], seed=1)
    trial_writer(root, "g", "s2", [0.0, 20.0, 40.0, 60.0], seed=2)
    trial_writer(root, "g", "s3", [0.0, 30.0], status="diverged", seed=3)
    store = load_store(root)
    curve = curves(store, EVAL_RETURN, Settings(reps=500, diverged="last"))[("cartpole_swingup", "MA-BN")]
    curve = curve.set_index(FRAME)
    assert curve.loc[1000, "point"] == pytest.approx(20.0)  # mean of 10, 20, 30 (3 seeds: nothing trimmed)
    # --diverged last: the diverged seed keeps its last return (30) up to its planned frames
    assert curve.loc[3000, "n"] == 3 and curve.loc[3000, "point"] == pytest.approx(40.0)
    # the default, task_min: it drops to the task's lowest evaluation (0) after diverging, as its final return does
    curve = curves(store, EVAL_RETURN, FAST)[("cartpole_swingup", "MA-BN")].set_index(FRAME)
    assert curve.loc[1000, "point"] == pytest.approx(20.0)  # before its divergence it counts as it was
    assert curve.loc[3000, "n"] == 3 and curve.loc[3000, "point"] == pytest.approx(30.0)  # mean(30, 60, 0)
    # ... but its diagnostics end where it diverged
    q = curves(store, "q_bias/mean", FAST)[("cartpole_swingup", "MA-BN")].set_index(FRAME)
    assert q.loc[3000, "n"] == 2


def test_normalized_finals_use_task_maximum(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "normalization", "c", [0.0, 500.0], task="cartpole_swingup")
    trial_writer(root, "normalization", "h1", [0.0, 1000.0], task="Hopper-v5")
    trial_writer(root, "normalization", "h2", [0.0, 4000.0], task="Hopper-v5", seed=2)
    finals = normalized_finals(load_store(root), FAST).set_index("trial_id")
    assert finals.at["c", "score"] == 0.5  # dm_control: / 1000
    assert finals.at["h1", "score"] == 0.25 and finals.at["h2", "score"] == 1.0  # Gymnasium: / best in store
    assert np.isclose(stats.iqm(finals["score"].to_numpy()), np.mean([0.25, 0.5, 1.0]))


def test_gymnasium_task_without_positive_return_is_left_out_of_aggregates(tmp_path, trial_writer):
    root = tmp_path / "results"
    trial_writer(root, "normalization", "c", [0.0, 500.0], task="cartpole_swingup")
    trial_writer(root, "normalization", "h", [0.0, -20.0], task="HalfCheetah-v5")
    store = load_store(root)
    assert set(normalized_finals(store, FAST)["task"]) == {"cartpole_swingup"}
    assert unnormalizable_tasks(store, FAST) == ["HalfCheetah-v5"]


def test_trial_json_written_by_orchestrator_is_tolerated_when_broken(tmp_path, trial_writer):
    root = tmp_path / "results"
    path = trial_writer(root, "grid_a", "t", [0, 1])
    (path / "trial.json").write_text("{not json")
    (path / "status.json").write_text(json.dumps(["not", "a", "mapping"]))
    trials = load_store(root).trials
    assert (trials.at[0, "grid"], trials.at[0, "status"]) == ("grid_a", "running")
