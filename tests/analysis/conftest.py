"""Fixtures of the analysis tests: synthetic stores and their figures, drawn once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_store import FIGURE_ARGS, build_all_grids, write_trial


@pytest.fixture
def trial_writer():
    return write_trial


@pytest.fixture(scope="session")
def all_grids_store(tmp_path_factory) -> Path:
    return build_all_grids(tmp_path_factory.mktemp("store") / "results")


@pytest.fixture(scope="session")
def all_grids_figures(all_grids_store, tmp_path_factory) -> tuple[Path, int, str]:
    """Every grid of the synthetic store drawn once per test session: (out dir, exit code, stdout)."""
    import contextlib
    import io

    from analysis.figures import main

    out = tmp_path_factory.mktemp("figures")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["--results", str(all_grids_store), "--out", str(out), *FIGURE_ARGS])
    return out, code, stdout.getvalue()
