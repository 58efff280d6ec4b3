"""Trial and cell ids of stored results survive new config keys (issue #9: placement never changes an id)."""

from __future__ import annotations

import pytest

from contract.config import build_config
from contract.store import cell_id, trial_id

# Ids the store computed before packing, frame codecs, member threads and precision existed (commit 393e91f).
STORED = [
    ({}, "ad1ae725bdf8", "0f709f3b7f84"),
    # Critic-I = T: Q-bias measured as before (eval-batch statistics) keeps the stored id; the new default
    # (the update's statistics) measures something else, so it is a new trial.
    (
        {
            "task": "cartpole_swingup",
            "obs_type": "states",
            "seed": 3,
            "bn_mode": "TTTTT",
            "q_bias_bn_stats": "eval_batch",
        },
        "626964e6c4dd",
        "d21098c2a13a",
    ),
]


@pytest.mark.parametrize("overrides, stored_trial, stored_cell", STORED)
def test_ids_stored_before_new_keys_are_unchanged(overrides, stored_trial, stored_cell):
    config = build_config(overrides).to_dict()
    assert (trial_id(config), cell_id(config)) == (stored_trial, stored_cell)
    placed = build_config({**overrides, "env_threads": 4, "torch_threads": 2}).to_dict()
    assert (trial_id(placed), cell_id(placed)) == (stored_trial, stored_cell)


def test_a_key_away_from_its_neutral_default_is_part_of_the_id():
    config = build_config({"precision": "bf16"}).to_dict()
    assert trial_id(config) != "ad1ae725bdf8"
    new_reading = build_config({"task": "cartpole_swingup", "obs_type": "states", "seed": 3, "bn_mode": "TTTTT"})
    assert trial_id(new_reading.to_dict()) != "626964e6c4dd"
