"""Trials the fault tests share: each is trained once per session and copied, never rerun per test.

A copy of a trial directory is the same trial (its id is its config's digest, and nothing in it names the
directory), so a test that damages or resumes a copy starts from exactly the state a fresh run would leave."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from agent import checkpoint
from agent.train import run_trial
from contract.config import build_config
from tests.faults.test_checkpoint_faults import TINY, StopAt, metrics, status


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The uninterrupted run of TINY every recovered trial must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    assert run_trial(build_config(TINY), out).state == "completed"
    return metrics(out)


@pytest.fixture(scope="session")
def interrupted_trial(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], None]:
    """``interrupted_trial(out)``: at ``out``, TINY as a run stopped from outside at frame 3500 leaves it
    (interrupted, checkpoints of frames 3000 and 2000), trained once and copied."""
    template = tmp_path_factory.mktemp("interrupted") / "trial"
    with pytest.raises(SystemExit):
        run_trial(build_config(TINY), template, sinks=[StopAt(3500)])
    assert status(template)["status"] == "interrupted" and status(template)["checkpoint_frame"] == 3000
    assert checkpoint.read_manifest(template / checkpoint.LATEST)["frame"] == 3000
    assert checkpoint.read_manifest(template / checkpoint.PREVIOUS)["frame"] == 2000

    def copy_to(out: Path) -> None:
        shutil.copytree(template, out)

    return copy_to
