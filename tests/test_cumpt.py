"""CumPT against hand-computed cases: grade choice, tiers, beta calibration."""

from __future__ import annotations

import random

import pytest

from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES
from training.cumpt import build_tiers, calibrate_beta, cumpt_grade, cumpt_tiers, tier_metrics
from training.metrics import macro_f1

SCHEME = BUILTIN_SCHEMES["taosr4"]
TAOSR_TIERS = {"Good": ["L4", "L3"], "Mid": ["L2"], "Bad": ["L1"]}
P = {"L4": 0.5, "L3": 0.25, "L2": 0.125, "L1": 0.125}  # cumulative from the top: 0.5, 0.75, 0.875, 1.0


@pytest.mark.parametrize(("beta", "grade"), [
    (0.1, "L4"), (0.5, "L4"),  # reaching beta exactly counts
    (0.6, "L3"), (0.75, "L3"),
    (0.8, "L2"), (0.875, "L2"),
    (0.9, "L1"), (1.0, "L1"),
])
def test_highest_grade_whose_cumulative_probability_reaches_beta(beta: float, grade: str) -> None:
    assert cumpt_grade(P, SCHEME.ids, beta) == grade


def test_low_beta_is_optimistic_high_beta_conservative() -> None:
    skewed = {"L4": 0.2, "L3": 0.1, "L2": 0.1, "L1": 0.6}  # argmax says L1
    assert cumpt_grade(skewed, SCHEME.ids, 0.2) == "L4"
    assert cumpt_grade(skewed, SCHEME.ids, 0.35) == "L2"
    assert cumpt_grade(skewed, SCHEME.ids, 0.5) == "L1"


def test_grades_map_to_configured_tiers() -> None:
    tiers = build_tiers(SCHEME, TAOSR_TIERS)
    assert tiers.names == ["Good", "Mid", "Bad"]
    assert cumpt_tiers([P, P, P], SCHEME, tiers, 0.5) == ["Good"] * 3
    assert cumpt_tiers([P], SCHEME, tiers, 0.8) == ["Mid"]
    assert cumpt_tiers([P], SCHEME, tiers, 0.95) == ["Bad"]


def test_tier_order_follows_the_grades_not_the_config() -> None:
    tiers = build_tiers(SCHEME, {"Bad": ["L1"], "Good": ["L4", "L3"], "Mid": ["L2"]})
    assert tiers.names == ["Good", "Mid", "Bad"]


def test_without_config_every_grade_is_a_tier() -> None:
    tiers = build_tiers(SCHEME, None)
    assert tiers.names == SCHEME.ids and tiers.tier("L2") == "L2"


def test_tiers_must_cover_every_grade_once() -> None:
    with pytest.raises(CotgenError, match="exactly once"):
        build_tiers(SCHEME, {"Good": ["L4", "L3"], "Bad": ["L1"]})
    with pytest.raises(CotgenError, match="exactly once"):
        build_tiers(SCHEME, {"Good": ["L4", "L3", "L2"], "Bad": ["L2", "L1"]})


def test_calibration_hand_case() -> None:
    # row 1 (gold L4) cumulates 0.6, 0.8, 0.9, 1; row 2 (gold L3) cumulates 0.4, 0.9, 0.95, 1.
    # Both right exactly when 0.4 < beta <= 0.6; the smallest such candidate is 0.6.
    probs = [{"L4": 0.6, "L3": 0.2, "L2": 0.1, "L1": 0.1}, {"L4": 0.4, "L3": 0.5, "L2": 0.05, "L1": 0.05}]
    cal = calibrate_beta(probs, ["L4", "L3"], SCHEME, build_tiers(SCHEME, None))
    assert cal.beta == pytest.approx(0.6)
    assert cal.validation_macro_f1 == pytest.approx(1.0)


def test_calibration_is_optimal_over_a_fine_grid() -> None:
    rng = random.Random(3)
    gold, probs = [], []
    for _ in range(90):  # under MAX_CANDIDATES cumulative sums, so the search is exhaustive
        g = rng.choice(SCHEME.ids)
        raw = {k: rng.random() + (1.5 if k == g else 0.0) for k in SCHEME.ids}
        total = sum(raw.values())
        gold.append(g)
        probs.append({k: v / total for k, v in raw.items()})
    tiers = build_tiers(SCHEME, TAOSR_TIERS)
    cal = calibrate_beta(probs, gold, SCHEME, tiers)
    gold_tiers = [tiers.tier(g) for g in gold]
    grid_best = max(macro_f1(gold_tiers, cumpt_tiers(probs, SCHEME, tiers, b / 1000), tiers.names) for b in range(1, 1001))
    assert cal.validation_macro_f1 == pytest.approx(grid_best)
    reported = tier_metrics(probs, gold, SCHEME, tiers, cal.beta)
    assert reported.macro_f1 == pytest.approx(cal.validation_macro_f1)
    assert reported.labels == ["Good", "Mid", "Bad"]


def test_calibration_needs_rows() -> None:
    with pytest.raises(CotgenError, match="at least one validation row"):
        calibrate_beta([], [], SCHEME, build_tiers(SCHEME, None))
