"""Every shipped grid and profile still plans the trials it planned before the grids were restructured (issue #20).

The fixture is the record of each grid x profile taken from the grid files as they were: the trial ids in order
and the placement (pack, resources, concurrency, Ray checkpoints, retries). A change to how grids are written -
a shared profile, a new key - must leave every one of them as it was: a changed id would run a trial again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.grid import available_grids, load_grid

FIXTURE = Path(__file__).parent / "fixtures" / "grid_trial_ids.json"
RECORDED: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text())


def grid_record(name: str) -> dict[str, Any]:
    """Per profile of grid ``name``: its trial ids in order and how its packs are placed."""
    record: dict[str, Any] = {}
    for profile in load_grid(name, "local").profiles:
        grid = load_grid(name, profile)
        record[profile] = {
            "trial_ids": [trial.trial_id for trial in grid.trials],
            "pack": grid.pack,
            "resources": grid.resources,
            "max_concurrent": grid.max_concurrent,
            "max_failures": grid.max_failures,
            "ray_checkpoints": grid.ray_checkpoints,
        }
    return record


def test_the_fixture_covers_every_grid() -> None:
    assert sorted(RECORDED) == available_grids()


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_grid_plans_the_recorded_trials(name: str) -> None:
    assert grid_record(name) == RECORDED[name]
