"""The per-grid exports of `make figures` (runs.parquet, final.csv, final.tex) and docs/explore_results.ipynb."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_store import BASE_CONFIG, FIGURE_DPI, FIGURE_REPS, ORIGIN

from agent.metrics import EVAL_RETURN, FRAME, METRIC_NAMES
from analysis.export import EXPORT_FILES, FINAL_COLUMNS, final_latex, final_table, latex_escape, runs_table
from analysis.store import ID_COLUMNS, load_store
from analysis.summary import Settings, cell_summaries, final_scores

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "docs" / "explore_results.ipynb"
SETTINGS = Settings(reps=FIGURE_REPS, dpi=FIGURE_DPI)  # what all_grids_figures drew with
# critic_i_mode: a diverged seed; target_bn_stats: failed, running and never-started trials; normalization: 2 tasks;
# buffer_mixing: a non-ASCII axis name (rho)
CHECKED_GRIDS = ("critic_i_mode", "target_bn_stats", "normalization", "buffer_mixing")


def _metrics_rows(path: Path) -> int:
    with path.open(newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def test_every_drawn_grid_gets_its_exports(all_grids_store, all_grids_figures):
    out, code, stdout = all_grids_figures
    assert code == 0
    for grid in load_store(all_grids_store).grids:
        for name in EXPORT_FILES:
            assert (out / grid / name).stat().st_size > 0, (grid, name)
        assert f"{out / grid} (+ runs.parquet, final.csv, final.tex)" in stdout


@pytest.mark.parametrize("grid", CHECKED_GRIDS)
def test_runs_parquet_round_trips(all_grids_store, all_grids_figures, grid):
    out, _, _ = all_grids_figures
    runs = pd.read_parquet(out / grid / "runs.parquet")
    # one row per metrics.csv row of every trial of the grid (trials with no metrics file add none)
    files = sorted((all_grids_store / grid).glob("*/metrics.csv"))
    assert len(runs) == sum(_metrics_rows(f) for f in files) > 0
    for path in files:
        assert (runs["trial_id"] == path.parent.name).sum() == _metrics_rows(path), path
    # ids and labels, every config key (task and seed are id columns), the frame and every metric
    config_keys = [k for k in BASE_CONFIG if k not in ("task", "seed")]
    for column in (*ID_COLUMNS, "cell_rank", *config_keys, FRAME, *METRIC_NAMES):
        assert column in runs.columns, column
    assert set(runs["grid"]) == {grid}
    # sane types: integers stay integers, metrics are floats, labels are text, flags are booleans
    for column in ("seed", FRAME, "cell_rank", "num_frames", "batch_size"):
        assert pd.api.types.is_integer_dtype(runs[column]), column
    for column in (*METRIC_NAMES, "lr", "buffer_mix_ratio"):
        assert pd.api.types.is_float_dtype(runs[column]), column
    for column in ("grid", "trial_id", "cell", "method", "cell_id", "task", "status", "optimizer"):
        assert pd.api.types.is_string_dtype(runs[column]), column
    assert pd.api.types.is_bool_dtype(runs["use_task_presets"])
    # the same rows and values as the loader's table of the grid (missing text reads back as NaN, not None)
    expected = runs_table(load_store(all_grids_store).grid(grid))
    assert list(runs.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(_missing_as_none(runs), _missing_as_none(expected), check_dtype=False)


def _missing_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def test_runs_parquet_holds_mixed_config_types(trial_writer, tmp_path):
    """A key that is a number in one trial and text (or a list) in another is written as text, not refused."""
    root = tmp_path / "results"
    trial_writer(root, "g", "a", [0.0, 10.0], seed=1, extra=3, maybe=None)
    trial_writer(root, "g", "b", [0.0, 20.0], seed=2, extra="three", maybe=True)
    trial_writer(root, "g", "c", [0.0, 30.0], seed=3, extra=[1, 2], maybe=False, **ORIGIN)
    runs = runs_table(load_store(root))
    runs.to_parquet(tmp_path / "runs.parquet", index=False)
    back = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(back) == 3 * 3  # two evaluations and one training row per trial
    by_trial = back.drop_duplicates("trial_id").set_index("trial_id")
    assert by_trial["extra"].to_dict() == {"a": "3", "b": "three", "c": "[1, 2]"}
    assert by_trial.loc["b", "maybe"] is True and by_trial.loc["c", "maybe"] is False
    assert pd.isna(by_trial.loc["a", "maybe"]) and pd.isna(by_trial.loc["c", "bn_mode"])  # None stays missing
    assert by_trial.loc["a", "bn_mode"] == "TTETT"


def _same(a: float, b: float) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return math.isnan(a)
    return a == pytest.approx(b, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("grid", CHECKED_GRIDS)
def test_final_csv_has_the_summary_numbers(all_grids_store, all_grids_figures, grid):
    out, _, _ = all_grids_figures
    table = pd.read_csv(out / grid / "final.csv")
    assert tuple(table.columns) == FINAL_COLUMNS
    store = load_store(all_grids_store).grid(grid)
    summaries = cell_summaries(store, SETTINGS)
    finals = final_scores(store, EVAL_RETURN, SETTINGS.final_window, SETTINGS.diverged)
    assert len(table) == len(summaries) > 0
    for row, s in zip(table.itertuples(index=False), summaries, strict=True):
        assert (row.grid, row.task, row.cell, row.method) == (grid, s.task, s.cell, s.method)
        assert (
            row.n_seeds,
            row.n_trials,
            row.n_diverged,
            row.n_running,
            row.n_interrupted,
            row.n_failed,
            row.n_new,
        ) == (s.n_final, s.n_trials, s.n_diverged, s.n_running, s.n_interrupted, s.n_failed, s.n_new)
        est = s.estimate
        for got, want in (
            (row.iqm, est.point if est else None),
            (row.ci_low, est.low if est else None),
            (row.ci_high, est.high if est else None),
            (row.q_bias_iqm, s.q_bias.point if s.q_bias else None),
        ):
            assert _same(got, want), (row, s)
        values = finals.loc[(finals["task"] == s.task) & (finals["cell"] == s.cell), "value"]
        assert _same(row.mean, float(values.mean()) if len(values) else None)
        assert _same(float(row.frames_min), s.frames_min) and _same(float(row.frames_max), s.frames_max)
        assert row.confidence == SETTINGS.confidence and row.diverged_rule == SETTINGS.diverged
    if grid == "critic_i_mode":  # the report's numbers (test_analysis_figures): MA-BN 615 [610, 620], Origin 230
        mabn = table.set_index("cell").loc["MA-BN"]
        assert (mabn["iqm"], mabn["ci_low"], mabn["ci_high"]) == (615.0, 610.0, 620.0)
        assert table.set_index("cell").loc["Origin", "n_diverged"] == 1


def test_final_table_without_trials_or_estimates(all_grids_store):
    """A cell with no finished trial (target_bn_stats, soft) has counts and empty numbers."""
    store = load_store(all_grids_store).grid("target_bn_stats")
    table = final_table(store, SETTINGS).set_index("cell")
    soft = table.loc["MA-BN, target stats=soft"]
    assert (soft["n_seeds"], soft["n_running"]) == (0, 1)
    assert np.isnan([soft["iqm"], soft["ci_low"], soft["ci_high"], soft["mean"]]).all()
    assert pd.isna(soft["frames_min"])
    assert "& MA-BN, target stats=soft & 0 & 0 & -- & -- & -- \\\\" in final_latex(table.reset_index(), SETTINGS)


def _body(tex: str) -> list[str]:
    return [line for line in tex.splitlines() if not line.startswith("%")]


def _braces_balanced(text: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):  # escaped braces are text
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


@pytest.mark.parametrize("grid", CHECKED_GRIDS)
def test_final_tex_is_a_booktabs_tabular(all_grids_figures, grid):
    out, _, _ = all_grids_figures
    tex = (out / grid / "final.tex").read_text()
    body = _body(tex)
    assert body[0] == r"\begin{tabular}{llrrrcr}" and body[-1] == r"\end{tabular}"
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert body[1] == r"\toprule" and body[3] == r"\midrule" and body[-2] == r"\bottomrule"
    assert _braces_balanced("\n".join(body))
    text = "\n".join(body)
    assert not re.search(r"(?<!\\)[_&%$#]", text.replace(" & ", " ")), "unescaped special character"
    assert text.isascii()  # rho, dashes, minus signs as LaTeX
    assert r"cartpole\_swingup" in text and "cartpole_swingup" not in text
    rows = [line for line in body[4:-2] if line != r"\midrule"]
    columns = len("llrrrcr")
    assert rows and all(line.endswith(r" \\") and line.count(" & ") == columns - 1 for line in rows)
    table = pd.read_csv(out / grid / "final.csv")
    assert len(rows) == len(table)
    # each row shows final.csv's numbers with the report's rounding
    for line, row in zip(rows, table.itertuples(index=False), strict=True):
        cells = line.removesuffix(r" \\").split(" & ")
        assert cells[2:4] == [str(row.n_seeds), str(row.n_diverged)]
        assert cells[4] == (f"{row.iqm:.1f}" if np.isfinite(row.iqm) else "--")
        if np.isfinite(row.ci_low):
            assert cells[5] == f"[{row.ci_low:.1f}, {row.ci_high:.1f}]"
    if grid == "buffer_mixing":
        assert r"\ensuremath{\rho}=0.25" in text
    if grid == "normalization":  # one block per task, the task named on its first row
        assert r"Hopper-v5 & " in text and text.count(r"\midrule") == 2


def test_latex_escape():
    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\k") == (
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i"
        r"\textasciicircum{}j\textbackslash{}k"
    )
    assert latex_escape("MA-BN, ρ=0.5 – x") == r"MA-BN, \ensuremath{\rho}=0.5 -- x"
    table = pd.DataFrame(
        [
            {
                "grid": "g",
                "task": "t_1",
                "cell": "c",
                "n_seeds": 2,
                "n_diverged": 0,
                "iqm": -1.25,
                "ci_low": -3.0,
                "ci_high": 0.5,
                "mean": -1.0,
            }
        ]
    )
    tex = final_latex(table, SETTINGS)
    assert r"t\_1 & c & 2 & 0 & \ensuremath{-}1.2 & [\ensuremath{-}3.0, 0.5] & \ensuremath{-}1.0 \\" in tex
    assert _braces_balanced("\n".join(_body(tex)))


def run_notebook(runs: Path, figure: Path, monkeypatch) -> dict:
    """Execute the code cells of docs/explore_results.ipynb in order, in one namespace, on ``runs``; its names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notebook = json.loads(NOTEBOOK.read_text())
    monkeypatch.setenv("BNSWEEP_RUNS", str(runs))
    monkeypatch.setenv("BNSWEEP_FIGURE", str(figure))
    namespace: dict = {"__name__": "__main__"}
    try:
        for i, cell in enumerate(c for c in notebook["cells"] if c["cell_type"] == "code"):
            exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[{i}]", "exec"), namespace)
    finally:
        plt.close("all")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000
    assert len(namespace["runs"]) == len(pd.read_parquet(runs))
    return namespace


def test_notebook_redraws_a_figure_from_runs_parquet(all_grids_figures, tmp_path, monkeypatch):
    """docs/explore_results.ipynb is valid nbformat 4 and its code cells run in order against an export."""
    out, _, _ = all_grids_figures
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["language"] == "python"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)  # saved clean
    assert all(isinstance(cell["source"], list) and "id" in cell for cell in notebook["cells"])
    first = "".join(code[0]["source"])
    assert "BNSWEEP_RUNS" in first and '"figures/critic_i_mode/runs.parquet"' in first and "BNSWEEP_FIGURE" in first

    namespace = run_notebook(out / "normalization" / "runs.parquet", tmp_path / "nb" / "eval_return.png", monkeypatch)
    assert len(namespace["fig"].axes) == 2  # one panel per task of the grid
    assert namespace["cells"] == ["Origin", "LayerNorm", "BN (TTTTT)", "MA-BN"]  # the report's cell order
