"""A grid of one's own shows the figures and judges the claims its grid file names (issue #20, item 5).

The analysis reads them from the grid text the orchestrator records per profile run (``_sweep/<profile>.json``),
so a store made from a grid file kept anywhere draws what that file asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from synthetic_store import FIGURE_DPI, FIGURE_REPS, write_trial

from analysis.claims import evaluate_claims
from analysis.figures import make_figures
from analysis.plots import FIGURES, caption
from analysis.store import load_store
from analysis.summary import Settings
from contract.grid_shows import GridShows, grid_shows, shipped_shows
from contract.store import SWEEP_DIR

SETTINGS = Settings(reps=FIGURE_REPS, dpi=FIGURE_DPI)


def _record(root: Path, grid: str, profile: str, grid_text: str, updated_at: str) -> None:
    """What ``orchestrator.sweep.write_sweep_record`` leaves for a profile run (the keys the analysis reads)."""
    directory = root / grid / SWEEP_DIR
    directory.mkdir(parents=True, exist_ok=True)
    record = {"grid": grid, "profile": profile, "updated_at": updated_at, "grid_text": grid_text}
    (directory / f"{profile}.json").write_text(json.dumps(record))


def _mine(root: Path) -> None:
    for seed in (1, 2):
        write_trial(root, "mine", f"E-{seed}", [0.0, 800 + seed], seed=seed, bn_mode="TTETT")
        write_trial(root, "mine", f"T-{seed}", [0.0, 300 + seed], seed=seed, bn_mode="TTTTT")


def test_every_figure_has_its_caption_beside_it():
    assert all(fig.caption and fig.name == name for name, fig in FIGURES.items())
    assert caption("curves") == FIGURES["curves"].caption and caption("not_a_figure") == "not_a_figure"


def test_a_grid_of_ones_own_draws_its_figures_and_judges_its_claims(tmp_path):
    root = tmp_path / "results"
    _mine(root)
    _record(root, "mine", "local", "figures: [curves]\n", "2026-01-01T00:00:00")  # an older run of the file
    named = "figures: [bn_mismatch, curves]\nclaims: [eval_mode_return]\naxes: {bn_mode: [TTTTT, TTETT]}\n"
    _record(root, "mine", "paper", named, "2026-02-01T00:00:00")
    assert grid_shows(root, "mine") == GridShows(("bn_mismatch", "curves"), ("eval_mode_return",))
    report, files = make_figures(root, tmp_path / "figures", settings=SETTINGS)
    assert [path.name for path in files["mine"]] == ["bn_mismatch.png", "bn_mismatch.pdf", "curves.png", "curves.pdf"]
    assert f"- **bn_mismatch**: {FIGURES['bn_mismatch'].caption} (" in report.read_text()
    mine = [r for r in evaluate_claims(load_store(root), SETTINGS) if r.grid == "mine"]
    assert [(r.claim.id, r.grid_label, r.cells) for r in mine] == [
        ("eval_mode_return", "mine", ("MA-BN", "BN (TTTTT)"))
    ]
    assert mine[0].verdict == "direction only"  # 2 seeds: judged on the grid's cells, too few to decide


def test_a_shipped_grid_shows_what_its_file_in_sweeps_names(tmp_path):
    root = tmp_path / "results"
    write_trial(root, "critic_i_mode", "E-1", [0.0, 800.0], bn_mode="TTETT")
    _record(root, "critic_i_mode", "local", "figures: [coverage]\n", "2026-01-01T00:00:00")
    assert grid_shows(root, "critic_i_mode") == shipped_shows()["critic_i_mode"]  # the file, not an old record


def test_records_that_name_no_grid_or_unknown_figures_fall_back_to_the_curves(tmp_path, capsys):
    root = tmp_path / "results"
    _mine(root)
    _record(root, "mine", "local", "figures: [bn_mismatch, gone]\n", "2026-01-01T00:00:00")
    _, files = make_figures(root, tmp_path / "figures", settings=SETTINGS)
    assert [path.stem for path in files["mine"]] == ["bn_mismatch", "bn_mismatch"]
    assert "grid mine names figure 'gone', which this version has not" in capsys.readouterr().err
    for text in ("figures: {a: 1}\n", "[not, a, grid]\n", "figures: [\n"):  # hostile or torn: a view never fails
        _record(root, "mine", "local", text, "2026-01-01T00:00:00")
        assert grid_shows(root, "mine") == GridShows()
    (root / "mine" / SWEEP_DIR / "local.json").write_text("{torn")
    assert grid_shows(root, "mine") == GridShows()
