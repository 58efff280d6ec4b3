"""bench.sgd_stability tells a surviving SGD step from one that blows up (real learner, small width)."""

from __future__ import annotations

from bench.sgd_stability import main, survives


def test_small_steps_survive_and_huge_ones_blow_up(capsys):
    assert survives(64, "MA-BN", 1e-3, 5)[0]
    stable, ran, largest = survives(64, "MA-BN", 10.0, 50)
    assert not stable and ran < 50 and largest > 0
    assert main(["--updates", "3", "--hidden", "32", "--lrs", "1e-3", "--methods", "Origin"]) == 0
    assert "hidden    32 Origin largest stable lr: 0.001" in capsys.readouterr().out
