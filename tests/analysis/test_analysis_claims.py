"""The claims table on small real stores with known answers: verdicts, seeds needed, and the diverged rule."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_store import LAYER_NORM, ORIGIN, write_trial

from analysis import claims, stats
from analysis.claims import CLAIMS, Claim, evaluate_claims, seeds_needed, table_rows
from analysis.report import claims_lines
from analysis.store import load_store
from analysis.summary import Settings, final_scores

FAST = Settings(reps=1000)
LAST = Settings(reps=1000, diverged="last")


def _trial(root, grid: str, name: str, final: float, **config) -> None:
    """Evaluations at frame 0 (return 0: the store's floor on the task) and 1000 (the final return)."""
    write_trial(root, grid, name, [0.0, final], **config)


def _by_grid(results, claim_y: str | None = None) -> dict[str, claims.ClaimResult]:
    return {r.claim.grid: r for r in results if claim_y is None or (r.claim.y or {}).get("method") == claim_y}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims") / "results"
    for seed, (e, t) in enumerate(((800, 300), (820, 310), (840, 320)), start=1):  # E far above T
        _trial(root, "critic_i_mode", f"E-{seed}", e, seed=seed, bn_mode="TTETT")
        _trial(root, "critic_i_mode", f"T-{seed}", t, seed=seed, bn_mode="TTTTT")
    for seed, (sgd, adam) in enumerate(((200, 800), (220, 820)), start=1):  # SGD far from Adam
        _trial(root, "optimizer", f"sgd-{seed}", sgd, seed=seed, optimizer="sgd", lr=1e-2)
        _trial(root, "optimizer", f"adam-{seed}", adam, seed=seed, optimizer="adam", lr=1e-4)
        _trial(root, "optimizer", f"origin-sgd-{seed}", 100, seed=seed, optimizer="sgd", lr=1e-2, **ORIGIN)
    for seed, (mabn, origin) in enumerate(((500, 450), (700, 550)), start=1):  # overlapping: inconclusive
        _trial(root, "normalization", f"mabn-{seed}", mabn, seed=seed)
        _trial(root, "normalization", f"origin-{seed}", origin, seed=seed, **ORIGIN)
    for rho, finals in ((0.0, (290, 310)), (0.5, (390, 410)), (1.0, (490, 510))):  # rising by 0.2 per unit rho
        for seed, final in enumerate(finals, start=1):
            _trial(root, "buffer_mixing", f"rho{rho}-{seed}", final, seed=seed, bn_mode="TTTTT", buffer_mix_ratio=rho)
    _trial(root, "buffer_mixing", "mabn-1", 900, seed=1)  # the MA-BN reference cell is not part of the slope
    for lr, mabn, origin in ((1e-4, 800, 780), (5e-4, 790, 500), (1e-3, 700, 100)):  # one seed per cell
        _trial(root, "learning_rate", f"mabn-{lr}", mabn, lr=lr)
        _trial(root, "learning_rate", f"origin-{lr}", origin, lr=lr, **ORIGIN)
    return load_store(root)


def test_claims_are_data_with_a_row_per_finding():
    assert [c.grid for c in CLAIMS] == [
        "critic_i_mode",
        "buffer_mixing",
        "learning_rate",
        "optimizer",
        "exploration",
        "normalization",
        "normalization",
    ]
    optimizer = next(c for c in CLAIMS if c.grid == "optimizer")
    assert optimizer.threshold == -claims.CLOSE_TOLERANCE and optimizer.x == {"method": "MA-BN", "optimizer": "sgd"}
    assert "IQM(MA-BN, SGD) - IQM(MA-BN, Adam) of final return / task max; needs > -0.1" in optimizer.definition()
    learning_rate = next(c for c in CLAIMS if c.grid == "learning_rate")
    assert "80% of the best IQM" in learning_rate.definition()
    with pytest.raises(ValueError, match="kind"):
        Claim("g", "s", "ratio", x={"method": "MA-BN"}, y={"method": "Origin"})
    with pytest.raises(ValueError, match="needs axis"):
        Claim("g", "s", "slope", x={"method": "MA-BN"})


def test_supported_contradicted_and_inconclusive(store):
    results = evaluate_claims(store, FAST)
    by_grid = _by_grid(results)
    critic = by_grid["critic_i_mode"]  # E 0.80-0.84 vs T 0.30-0.32: the whole CI above 0
    assert critic.verdict == "supported" and critic.effect.point == pytest.approx(0.51)
    assert critic.effect.low > 0 and critic.poi.point == 1.0 and (critic.seeds, critic.runs) == (3, 6)
    assert critic.cells == ("MA-BN", "BN (TTTTT)")
    optimizer = by_grid["optimizer"]  # SGD 0.21 vs Adam 0.81: -0.6, far below the -0.1 tolerance
    assert optimizer.verdict == "contradicted" and optimizer.effect.point == pytest.approx(-0.6)
    assert optimizer.effect.high < -claims.CLOSE_TOLERANCE and optimizer.poi.point == 0.0
    # normalization, MA-BN {0.5, 0.7} vs Origin {0.45, 0.55}: with 2 seeds each the bootstrap CI of the difference of
    # means is [min x - max y, max x - min y] = [-0.05, 0.25] (each extreme has chance 1/16 > 2.5%).
    origin = _by_grid(results, "Origin")["normalization"]
    assert origin.verdict == "inconclusive" and origin.effect.point == pytest.approx(0.1)
    assert (origin.effect.low, origin.effect.high) == pytest.approx((-0.05, 0.25))
    assert origin.poi.point == 0.75  # 3 of the 4 pairs won
    # seeds needed: half-width 0.15 over distance 0.1 -> n = ceil(2 * 1.5^2) = ceil(4.5) = 5
    assert origin.seeds == 2 and origin.seeds_needed == 5
    assert origin.verdict_text() == "inconclusive at 2 seeds (≈ 5 seeds per cell needed at this spread)"
    # a slope over rho: cell IQMs 0.3, 0.4, 0.5 at rho 0, 0.5, 1 -> +0.2 per unit rho; MA-BN (no rho axis) left out
    mixing = by_grid["buffer_mixing"]
    assert mixing.verdict == "supported" and mixing.effect.point == pytest.approx(0.2)
    assert mixing.poi_text == "P(BN (TTTTT), ρ=1 > BN (TTTTT), ρ=0)" and mixing.poi.point == 1.0


def test_range_claim_and_single_seed(store):
    lr = _by_grid(evaluate_claims(store, FAST))["learning_rate"]
    # best IQM 0.8; >= 80% of it (0.64): MA-BN at all 3 learning rates, Origin at 1e-4 only -> +2
    assert lr.effect.point == 2.0 and lr.detail == "MA-BN 3 of 3, Origin 1 of 3"
    assert lr.poi.point == pytest.approx(1.0)  # MA-BN above Origin at every learning rate
    # ... but one seed per cell shows no spread: no verdict, and no seeds-needed number to give
    assert lr.verdict == "inconclusive" and lr.seeds == 1 and lr.seeds_needed is None
    assert "1 seed in a compared cell" in lr.verdict_text()


def test_missing_and_ambiguous_cells_say_why(store, tmp_path):
    results = evaluate_claims(store, FAST)
    assert _by_grid(results)["exploration"].verdict_text() == "no data: grid exploration not in the store"
    layer_norm = _by_grid(results, "LayerNorm")["normalization"]
    assert layer_norm.verdict_text() == "no data: no finished trial of LayerNorm"
    # A selector that matches two cells is refused, naming them, instead of picking one.
    root = tmp_path / "results"
    for seed in (1, 2):
        _trial(root, "normalization", f"mabn-{seed}", 600, seed=seed)
        _trial(root, "normalization", f"ln-a-{seed}", 500, seed=seed, hidden_dim=32, **LAYER_NORM)
        _trial(root, "normalization", f"ln-b-{seed}", 500, seed=seed, hidden_dim=64, **LAYER_NORM)
    result = _by_grid(evaluate_claims(load_store(root), FAST), "LayerNorm")["normalization"]
    assert result.verdict == "no data"
    assert "LayerNorm matches 2 cells (LayerNorm, hidden_dim=32; LayerNorm, hidden_dim=64)" in result.note


def test_diverged_rule_changes_the_verdict_and_is_counted(tmp_path):
    root = tmp_path / "results"
    for seed, (e, t) in enumerate(((700, 600), (720, 620), (760, 640)), start=1):
        _trial(
            root,
            "critic_i_mode",
            f"E-{seed}",
            e,
            seed=seed,
            bn_mode="TTETT",
            status="diverged" if seed == 3 else "completed",
        )
        _trial(root, "critic_i_mode", f"T-{seed}", t, seed=seed, bn_mode="TTTTT")
    write_trial(root, "smoke", "low", [-5.0, 10.0])  # another grid, same task: the store-wide floor is -5
    store = load_store(root)
    assert store.eval_floors == {"cartpole_swingup": -5.0} and store.grid("critic_i_mode").eval_floors == {
        "cartpole_swingup": -5.0
    }
    diverged = final_scores(store.grid("critic_i_mode")).set_index("trial_id").at["E-3", "value"]
    assert diverged == -5.0  # task_min, the default
    # --diverged last: the seed that diverged after reaching 760 counts with 760 and E wins on every seed ...
    last = _by_grid(evaluate_claims(store, LAST))["critic_i_mode"]
    assert last.verdict == "supported" and last.effect.point == pytest.approx((700 + 720 + 760) / 3000 - 0.62)
    # ... task_min charges it the worst return seen on the task: E = {-5, 700, 720} is no longer ahead
    floor = _by_grid(evaluate_claims(store, FAST))["critic_i_mode"]
    assert floor.effect.point == pytest.approx((-5 + 700 + 720) / 3000 - 0.62)
    assert floor.verdict != "supported"
    assert (floor.runs, floor.diverged) == (6, 1)
    row = table_rows([floor])[0]
    assert row[5] == "6 (1 diverged)"
    text = "\n".join(claims_lines(store, FAST))
    assert "the lowest evaluation return of any trial of the store on its task (`--diverged task_min`)" in text
    assert "its last evaluation before divergence (`--diverged last`)" in "\n".join(claims_lines(store, LAST))


def test_profiles_are_judged_apart(tmp_path):
    root = tmp_path / "results"
    for profile, (e, t) in (("local", (800, 300)), ("paper", (300, 800))):
        for seed in (1, 2):
            for name, mode, final in (("E", "TTETT", e + seed), ("T", "TTTTT", t + seed)):
                meta = {"grid": "critic_i_mode", "trial_id": f"{profile}-{name}-{seed}", "profile": profile}
                _trial(root, "critic_i_mode", f"{profile}-{name}-{seed}", final, seed=seed, bn_mode=mode, meta=meta)
    results = [r for r in evaluate_claims(load_store(root), FAST) if r.claim.grid == "critic_i_mode"]
    assert [(r.grid_label, r.verdict) for r in results] == [
        ("critic_i_mode (local)", "supported"),
        ("critic_i_mode (paper)", "contradicted"),
    ]


def test_effect_interval_and_seeds_needed_rule():
    # Two groups of two runs: the CI of the difference of IQMs (= means) spans [min x - max y, max x - min y].
    est = stats.effect_interval([[[5.0, 7.0]], [[4.5, 5.5]]], lambda v: v[0] - v[1])
    assert (est.point, est.low, est.high) == pytest.approx((1.0, -0.5, 2.5))
    assert est.n_runs == 2 and est.n_tasks == 1
    # one run per group and task: nothing to resample, the CI is the point
    assert stats.effect_interval([[[1.0], [2.0]], [[0.0], [1.0]]], lambda v: v[0] - v[1]).low == 1.0
    # stratified within each task, group by group: task means never mix, so the difference stays at 10
    est = stats.effect_interval(
        [[[0.0, 0.0], [20.0, 20.0]], [[0.0, 0.0], [0.0, 0.0]]], lambda v: v[0] - v[1], stats.mean
    )
    assert (est.point, est.low, est.high) == (10.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="finite"):
        stats.effect_interval([[[1.0]], [[np.nan]]], lambda v: v[0] - v[1])
    interval = stats.Interval(0.1, -0.05, 0.25, 4, 1)
    assert seeds_needed(interval, 0.0, 2) == 5  # ceil(2 * (0.15 / 0.1)^2)
    assert seeds_needed(interval, 0.1, 2) is None  # the effect sits on the threshold
    assert seeds_needed(stats.Interval(1.0, 0.9, 1.1, 4, 1), 0.0, 2) == 3  # never fewer than one more seed
    assert seeds_needed(stats.Interval(-0.1 - 1e-17, -0.2, 0.0, 4, 1), -0.1, 2) is None  # rounding: on the threshold
    tiny = claims.ClaimResult(CLAIMS[0], None, "inconclusive", seeds=2, seeds_needed=claims.MANY_SEEDS + 1)
    assert "more than 1000 seeds per cell" in tiny.verdict_text()


def test_claims_cli(store, capsys, tmp_path):
    assert claims.main(["--results", str(store.root), "--reps", "200"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Claims of the paper") and "| optimizer | SGD with MA-BN" in out
    assert claims.main(["--results", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        claims.main(["--diverged", "zero"])
    assert exit_info.value.code == 2
