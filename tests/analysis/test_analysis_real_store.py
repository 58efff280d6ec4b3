"""A real tiny store written by the worker (two 1000-frame state trials), loaded and drawn end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from synthetic_store import FIGURE_ARGS
from test_analysis_export import run_notebook

from agent.metrics import COLUMNS, EVAL_RETURN, FRAME
from analysis.figures import main
from analysis.plots import figure_names
from analysis.store import load_store

# The smallest trial that still trains: 500 random seed frames, then 125 updates; evals at 0 and 1000 frames,
# training rows at 500 and 1000.
TINY = {
    "task": "cartpole_swingup",
    "obs_type": "states",
    "num_frames": 1000,
    "num_seed_frames": 500,
    "num_expl_steps": 250,
    "hidden_dim": 32,
    "feature_dim": 16,
    "batch_size": 32,
    "eval_every_frames": 1000,
    "num_eval_episodes": 1,
    "log_every_frames": 500,
    "checkpoint_every_frames": 0,
    "torch_threads": 1,
    "seed": 1,
}
TRIALS = {"mabn": {}, "origin": {"actor_norm": "none", "critic_norm": "none"}}


@pytest.fixture(scope="module")
def worker_store(tmp_path_factory) -> Path:
    """Two trials run by the worker's own entry point (``run_trial``, what the orchestrator calls)."""
    import torch

    from agent.train import run_trial
    from contract.config import build_config

    root = tmp_path_factory.mktemp("real") / "results"
    threads = torch.get_num_threads()
    try:
        for name, overrides in TRIALS.items():
            status = run_trial(build_config({**TINY, **overrides}), root / "critic_i_mode" / name)
            assert status.state == "completed", status
    finally:
        torch.set_num_threads(threads)  # run_trial sets the trial's thread count process-wide
    return root


def test_worker_store_loads(worker_store):
    store = load_store(worker_store)
    assert store.grids == ["critic_i_mode"]
    trials = store.trials.set_index("trial_id")
    assert trials.loc["mabn", ["method", "status", "seed"]].tolist() == ["MA-BN", "completed", 1]
    assert trials.loc["origin", ["method", "status"]].tolist() == ["Origin", "completed"]
    assert set(store.trials["cell"]) == {"MA-BN", "Origin"}  # the varying norms are the method, not extra axes
    for name in TRIALS:
        with (worker_store / "critic_i_mode" / name / "metrics.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert tuple(rows[0]) == COLUMNS  # the contract the loader reads
        mine = store.data[store.data["trial_id"] == name]
        assert len(mine) == len(rows)  # one tidy row per logged row
        assert mine.loc[mine[EVAL_RETURN].notna(), FRAME].tolist() == [0, 1000]
        assert mine.loc[mine["losses/critic"].notna(), FRAME].tolist() == [1000]  # it trained


def test_worker_store_figures_and_report(worker_store, tmp_path, monkeypatch):
    out = tmp_path / "figures"
    assert main(["--results", str(worker_store), "--out", str(out), *FIGURE_ARGS]) == 0
    for name in figure_names("critic_i_mode"):
        for ext in ("png", "pdf"):
            assert (out / "critic_i_mode" / f"{name}.{ext}").stat().st_size > 2000
    report = (out / "report.md").read_text()
    assert "| cartpole_swingup | Origin | 1/1 | 0 | 1k |" in report
    assert "| cartpole_swingup | MA-BN | 1/1 | 0 | 1k |" in report
    assert "1 seed: no CI" in report
    # the claims table judges the worker's store too: it has no Critic-I = T cell, and says so
    assert "| critic_i_mode | Critic-I in eval mode" in report
    assert "no data: no finished trial of BN (TTTTT)" in report
    # the exports hold the worker's full config (every key of TrialConfig, None where unset) and its metrics
    runs = pd.read_parquet(out / "critic_i_mode" / "runs.parquet")
    assert len(runs) == len(load_store(worker_store).data)
    assert {"actor_lr", "critic_lr", "bn_mode", "hidden_dim", "obs_type", FRAME, EVAL_RETURN} <= set(runs.columns)
    final = pd.read_csv(out / "critic_i_mode" / "final.csv")
    assert final["cell"].tolist() == ["Origin", "MA-BN"] and final["n_seeds"].tolist() == [1, 1]
    assert (out / "critic_i_mode" / "final.tex").read_text().count("cartpole\\_swingup") == 1
    # ... and docs/explore_results.ipynb redraws the return curves from it
    notebook = run_notebook(out / "critic_i_mode" / "runs.parquet", tmp_path / "nb.png", monkeypatch)
    assert notebook["cells"] == ["Origin", "MA-BN"]
