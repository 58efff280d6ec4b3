"""The grid format's one schema (issue #12): the JSON Schema editors use is the code's, and says what the code says."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from orch_helpers import grid_dict, write_grid

from contract.config import ConfigError, build_config, help_text
from orchestrator.grid import GridError, load_grid
from orchestrator.grid_schema import SCHEMA_FILE, json_schema

SWEEPS = sorted(SCHEMA_FILE.parent.glob("*.yaml"))
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def test_committed_schema_is_the_generated_one() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == json_schema(), "sweeps/grid.schema.json is stale: python -m orchestrator.grid_schema --write"
    jsonschema.Draft202012Validator.check_schema(committed)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_grid_passes_the_json_schema_and_names_it(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=grid.schema.json\n")  # what editors read
    assert not list(VALIDATOR.iter_errors(yaml.safe_load(text)))


SHARED_PROFILES = sorted((SCHEMA_FILE.parent / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", SHARED_PROFILES, ids=[p.stem for p in SHARED_PROFILES])
def test_every_shared_profile_passes_the_json_schema_and_names_it(path: Path) -> None:
    text = path.read_text()  # a shared profile's keys are a grid's, so the grid schema helps while editing it too
    assert text.startswith("# yaml-language-server: $schema=../grid.schema.json\n")
    assert not list(VALIDATOR.iter_errors(yaml.safe_load(text)))


# Grids the code rejects for a reason an editor can see: the JSON Schema rejects them too, at the same key.
REJECTED_BY_BOTH = [
    ("unknown-config-key", lambda g: g["base"].update(learning_rate=1e-3), ["base"], "learning_rate"),
    ("unknown-top-key", lambda g: g.update(axis=g.pop("axes")), [], "axis"),
    ("allowed-set", lambda g: g.update(cells=[{"name": "X", "critic_norm": "batch"}]), ["cells", 0, "critic_norm"], ""),
    ("range", lambda g: g["base"].update(discount=1.5), ["base", "discount"], ""),
    ("type", lambda g: g["base"].update(hidden_dim="wide"), ["base", "hidden_dim"], ""),
    ("mode-letters", lambda g: g["axes"].update(bn_mode=["TTXTT"]), ["axes", "bn_mode"], ""),
    ("named-axis-value", lambda g: g["axes"].update(optim={"SGD": {"optimizer": "rmsprop"}}), ["axes", "optim"], ""),
    ("managed-key", lambda g: g["base"].update(seed=3), ["base"], "seed"),
    ("resources", lambda g: g.update(resources={"cpu": 1, "gpu": -1}), ["resources", "gpu"], ""),
    ("wandb-mode", lambda g: g.update(wandb={"mode": "sometimes"}), ["wandb", "mode"], ""),
    ("pack", lambda g: g.update(pack=0), ["pack"], ""),
    ("profile-key", lambda g: g.update(profiles={"local": {"bse": {}}}), ["profiles", "local"], "bse"),
    ("figure-name", lambda g: g.update(figures=["curves", "curvs"]), ["figures", 1], ""),
    ("claim-id", lambda g: g.update(claims=["no_such_claim"]), ["claims", 0], ""),
]


@pytest.mark.parametrize("case", REJECTED_BY_BOTH, ids=[c[0] for c in REJECTED_BY_BOTH])
def test_json_schema_and_code_reject_the_same_grids(case, tmp_path: Path) -> None:
    _, change, where, word = case
    grid = grid_dict("bad")
    assert not list(VALIDATOR.iter_errors(grid))
    change(grid)
    errors = list(VALIDATOR.iter_errors(grid))
    assert any(list(e.absolute_path)[: len(where)] == where and word in e.message for e in errors), [
        (list(e.absolute_path), e.message) for e in errors
    ]
    with pytest.raises(GridError):
        load_grid(str(write_grid(tmp_path, "bad.yaml", grid)), "local")


def test_unknown_keys_get_suggestions_by_meaning_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean lr, actor_lr, critic_lr\?"):
        build_config({"learning_rate": 1e-3})
    grid = grid_dict("bad")
    grid["axes"]["learning_rate"] = [1e-3, 1e-4]
    with pytest.raises(
        GridError, match=r"axes.learning_rate: 'learning_rate' is not a trial config key \(did you mean lr"
    ):
        load_grid(str(write_grid(tmp_path, "bad.yaml", grid)), "local")


def test_help_comes_from_the_declarations() -> None:
    text = help_text()
    assert "  lr = 0.0001\n      learning rate for all networks" in text
    assert "  precision = 'fp32'  allowed: fp32, tf32, bf16" in text


def test_values_coerce_as_yaml_and_the_command_line_write_them() -> None:
    config = build_config({"num_frames": "1e6", "lr": "3e-4", "critic_lr": "null", "checkpoint_replay": "no"})
    assert (config.num_frames, config.lr, config.critic_lr, config.checkpoint_replay) == (1_000_000, 3e-4, None, False)
    # null written as text means "no mode given": a BN network still gets MA-BN's default, without BN none
    assert build_config({"bn_mode": "None"}).bn_mode == "TTETT"
    assert build_config({"bn_mode": "null", "actor_norm": "none", "critic_norm": "none"}).bn_mode is None
    for bad, words in [({"batch_size": True}, "batch_size=True: expected int"), ({"lr": "inf"}, "finite")]:
        with pytest.raises(ConfigError, match=words):
            build_config(bad)
