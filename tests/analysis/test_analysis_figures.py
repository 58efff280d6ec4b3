"""Every grid's figures are drawn (PNG and PDF, non-empty), the report lists them, and reruns are byte-identical."""

from __future__ import annotations

import re

import pytest
from synthetic_store import FIGURE_ARGS, FIGURE_DPI, FIGURE_REPS

from analysis.figures import main
from analysis.plots import FIGURES_BY_GRID, GENERIC, GridData, figure_names, figures_for
from analysis.report import write_report
from analysis.store import load_store
from analysis.summary import Settings

SPEC_GRIDS = (
    "critic_i_mode",
    "bn_modes",
    "buffer_mixing",
    "target_bn_stats",
    "learning_rate",
    "optimizer",
    "exploration",
    "normalization",
)
OPEN_QUESTION_GRIDS = ("critic_i_cause", "target_alignment")  # the paper's open questions (issue #21)


def test_every_spec_grid_has_its_figures():
    assert set(SPEC_GRIDS) | {"smoke"} | set(OPEN_QUESTION_GRIDS) == set(FIGURES_BY_GRID)
    assert figures_for("my_new_grid") == GENERIC
    assert figure_names("bn_modes")[:2] == ["modes_ranked", "modes_heatmap"]
    assert {"aggregate", "probability_of_improvement"} <= set(figure_names("normalization"))


def test_every_figure_file_is_written_for_every_grid(all_grids_store, all_grids_figures):
    out, code, stdout = all_grids_figures
    assert code == 0
    grids = load_store(all_grids_store).grids
    assert set(grids) == set(SPEC_GRIDS) | {"smoke"}
    for grid in grids:
        for name in figure_names(grid):
            png, pdf = out / grid / f"{name}.png", out / grid / f"{name}.pdf"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
            assert pdf.read_bytes()[:5] == b"%PDF-", pdf
            assert png.stat().st_size > 2000 and pdf.stat().st_size > 5000, (png, pdf)
        assert f"{grid}: {2 * len(figure_names(grid))} files" in stdout


def test_report_lists_figures_tables_and_troubled_trials(all_grids_store, all_grids_figures):
    out, _, _ = all_grids_figures
    report = (out / "report.md").read_text()
    for grid in load_store(all_grids_store).grids:
        assert f"## Grid `{grid}`" in report
        for name in figure_names(grid):
            assert f"]({grid}/{name}.png)" in report and f"]({grid}/{name}.pdf)" in report
    # per task and cell: seeds, frames, IQM and CI (critic_i_mode, MA-BN: finals 610 and 620)
    assert re.search(r"\| cartpole_swingup \| MA-BN \| 2/2 \| 0 \| 3k \| 615\.0 \| \[610\.0, 620\.0\] \|", report)
    # the diverged Origin seed counts (at the task's lowest evaluation, 0: IQM of 0 and 460 = 230) and is counted in
    # the diverged column; the partial grid's cells say what is missing
    assert re.search(r"\| cartpole_swingup \| Origin \| 2/2 \| 1 \| 2k–3k \| 230\.0 \|", report)
    assert re.search(r"\| MA-BN, target stats=soft \| 0/1 \| 0 \| – \| – \| – \| – \| 1 running \|", report)
    assert re.search(r"\| MA-BN, target stats=copy \| 2/3 \| .* \| 1 failed \|", report)
    assert "| MA-BN, target stats=independent | 2/3 |" in report and "1 not started" in report
    trouble = report.split("## Trials that diverged or failed")[1]
    assert "O-2" in trouble and "diverged" in trouble and "OSError: disk full" in trouble
    assert "soft-2" in trouble.split("## Trials still running or not started")[1]
    # across tasks (normalization: cartpole / 1000, Hopper-v5 / best in store) and probability of improvement
    assert "cartpole_swingup: 1000" in report and "Hopper-v5: 2120" in report
    assert re.search(r"\| Origin \| 1\.000 \| \[1\.000, 1\.000\] \| 2 \| 0 / 0 \|", report)  # P(MA-BN > Origin)
    assert re.search(r"\| MA-BN \| 4 runs / 2 tasks \| 0 \| ", report)  # aggregate: runs and diverged runs
    # the claims table: critic_i_mode (E 610/620 vs T 310/320): 2 seeds on one task, so direction only; every
    # claim has a row
    claims = report.split("## Claims of the paper")[1].split("\n## ")[0]
    assert re.search(
        r"\| critic_i_mode \| Critic-I in eval mode .* \| \+0\.300 \[\+0\.290, \+0\.310\] \| "
        r"P\(MA-BN > BN \(TTTTT\)\) = 1\.00 \[1\.00, 1\.00\] \| 4 \(0 diverged\) \| "
        r"direction only \(2 seeds\): above the threshold; too few runs .* \|",
        claims,
    )
    # the header, the twelve claims of the paper's findings and the six rows of its open questions (issue #21; the
    # rule line starts "|-")
    assert claims.count("\n| ") == 1 + 12 + 6
    assert "Final return" in report and f"{FIGURE_REPS} resamples, seed 0" in report


def test_rerun_is_byte_identical(all_grids_store, all_grids_figures, tmp_path):
    out, _, _ = all_grids_figures
    args = ["--results", str(all_grids_store), *FIGURE_ARGS, "--grid", "smoke"]
    assert main([*args, "--out", str(tmp_path / "again")]) == 0
    for name in ("curves.png", "curves.pdf"):
        assert (tmp_path / "again" / "smoke" / name).read_bytes() == (out / "smoke" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["report.md", "smoke"]  # --grid limits it
    partial_report = (tmp_path / "again" / "report.md").read_text()  # ... but the report still covers every grid
    assert "## Grid `critic_i_mode`" in partial_report
    assert "none drawn yet: add `--grid critic_i_mode`" in partial_report
    assert b"CreationDate" not in (out / "smoke" / "curves.pdf").read_bytes()
    assert b"Software" not in (out / "smoke" / "curves.png").read_bytes()
    # The report of the full run, recomputed from the same store (statistics only, no drawing), is identical.
    store = load_store(all_grids_store)
    settings = Settings(reps=FIGURE_REPS, dpi=FIGURE_DPI)
    grids = [GridData(store.grid(g), settings) for g in store.grids]
    again = tmp_path / "report"
    files = {
        g: [again / g / f"{name}.{ext}" for name in figure_names(g) for ext in ("png", "pdf")] for g in store.grids
    }
    assert write_report(again, store, grids, files, str(all_grids_store)).read_text() == (out / "report.md").read_text()


def test_cli_errors(tmp_path, all_grids_store, capsys):
    assert main(["--results", str(tmp_path / "nope"), "--out", str(tmp_path / "f")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--results", str(tmp_path / "empty"), "--out", str(tmp_path / "f")]) == 2
    assert "is empty" in capsys.readouterr().err
    (tmp_path / "other" / "sub").mkdir(parents=True)
    (tmp_path / "other" / "sub" / "data.csv").write_text("a,b\n")
    assert main(["--results", str(tmp_path / "other"), "--out", str(tmp_path / "f")]) == 2
    assert "not a result store" in capsys.readouterr().err
    assert main(["--results", str(all_grids_store), "--out", str(tmp_path / "f"), "--grid", "nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "nonexistent" in err and "critic_i_mode" in err  # says which grids there are
    assert not (tmp_path / "f").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--reps", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--diverged", "drop"])  # dropping diverged trials is not an option: it flatters the method
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
