"""A grid declares what it shows (`figures`, `claims`) and may extend a shared profile (issue #20, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from orch_helpers import grid_dict, write_grid

from analysis.claims import CLAIMS
from analysis.plots import FIGURES
from contract.grid_shows import PROFILES_DIR, GridShows, grid_files, shipped_shows
from orchestrator import SWEEPS_DIR
from orchestrator.grid import GridError, load_grid


def _errors(path: Path, profile: str = "local") -> str:
    with pytest.raises(GridError) as info:
        load_grid(str(path), profile)
    return str(info.value)


def test_a_grid_of_ones_own_names_figures_and_claims(tmp_path: Path) -> None:
    grid = grid_dict("mine", figures=["bn_mismatch", "curves"], claims=["eval_mode_return"])
    assert load_grid(str(write_grid(tmp_path, "mine.yaml", grid)), "local").trials  # valid, and runs as before


def test_unknown_or_repeated_names_are_refused_naming_file_key_and_allowed_values(tmp_path: Path) -> None:
    bad = write_grid(tmp_path, "bad.yaml", grid_dict("bad", figures=["curves", "curvs"], claims=["no_such_claim"]))
    text = _errors(bad)
    assert f"{bad}: figures[1]: 'curvs': allowed: " + ", ".join(FIGURES) in text
    assert f"{bad}: claims[0]: 'no_such_claim': allowed: " + ", ".join(c.id for c in CLAIMS) in text
    twice = write_grid(tmp_path, "twice.yaml", grid_dict("twice", figures=["curves", "curves"]))
    assert f"{twice}: figures[1]: 'curves': duplicate figure (already at [0])" in _errors(twice)
    in_profile = write_grid(tmp_path, "p.yaml", grid_dict("p", profiles={"local": {"figures": ["curves"]}}))
    assert "profiles.local.figures: unknown key 'figures'" in _errors(
        in_profile
    )  # what a grid shows is not per profile


def test_every_shipped_claim_is_tested_by_exactly_one_shipped_grid() -> None:
    named = [claim for shows in shipped_shows().values() for claim in shows.claims]
    assert sorted(named) == sorted(c.id for c in CLAIMS)
    assert shipped_shows()["verify_learning"] == GridShows()  # the worker's check: the curves, no claims


def test_shared_profiles_are_not_grids() -> None:
    assert PROFILES_DIR.parent == SWEEPS_DIR and (PROFILES_DIR / "paper.yaml").is_file()
    assert all(path.parent == SWEEPS_DIR for path in grid_files())


def test_a_profile_extends_a_shared_profile_and_overrides_it(tmp_path: Path) -> None:
    shared = {"seeds": [1, 2, 3], "base": {"hidden_dim": 64, "feature_dim": 8}, "pack": 2, "resources": {"cpu": 2}}
    write_grid(tmp_path, "shared.yaml", shared)
    grid = grid_dict("ext", profiles={"wide": {"extends": "shared.yaml", "base": {"hidden_dim": 48}, "seeds": [4]}})
    loaded = load_grid(str(write_grid(tmp_path, "ext.yaml", grid)), "wide")
    config = loaded.trials[0].config
    # the profile's own keys win; base merges key by key across the shared file, the profile and the top level
    assert (config["hidden_dim"], config["feature_dim"], config["batch_size"]) == (48, 8, grid["base"]["batch_size"])
    assert loaded.seeds == (4,) and loaded.pack == 2 and loaded.cpus_per_trial == 2
    assert loaded.pack_source == "profiles.wide.pack"  # where to override it: in the grid's own profile


def test_extends_by_name_reads_sweeps_profiles(tmp_path: Path) -> None:
    grid = grid_dict("named", profiles={"paper": {"extends": "paper"}})
    loaded = load_grid(str(write_grid(tmp_path, "named.yaml", grid)), "paper")
    shared = yaml.safe_load((PROFILES_DIR / "paper.yaml").read_text())
    assert loaded.pack == shared["pack"] and loaded.trials[0].config["frame_codec"] == shared["base"]["frame_codec"]


def test_a_missing_or_broken_shared_profile_is_reported(tmp_path: Path) -> None:
    missing = write_grid(tmp_path, "m.yaml", grid_dict("m", profiles={"local": {"extends": "papr"}}))
    text = _errors(missing)
    assert f"{missing}: profiles.local.extends: 'papr': no such shared profile" in text
    assert "(did you mean paper?); shared profiles in" in text
    broken = write_grid(tmp_path, "shared.yaml", {"base": {"hiden_dim": 64}, "name": "x", "extends": "paper"})
    grid = write_grid(tmp_path, "b.yaml", grid_dict("b", profiles={"local": {"extends": "shared.yaml"}}))
    text = _errors(grid)
    assert f"{broken}: base.hiden_dim: unknown trial config key 'hiden_dim' (did you mean hidden_dim" in text
    assert f"{broken}: name: unknown key 'name'" in text and "allowed in a shared profile: description, base" in text
    assert f"{broken}: extends: unknown key 'extends'" in text  # one level: a shared profile extends nothing
    (tmp_path / "list.yaml").write_text("- seeds\n- pack\n")
    listed = write_grid(tmp_path, "l.yaml", grid_dict("l", profiles={"local": {"extends": "list.yaml"}}))
    assert "profiles.local.extends: 'list.yaml': " in _errors(listed) and "holds list, not a mapping" in _errors(listed)
