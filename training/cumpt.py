"""CumPT (TaoSR1 deployment): one threshold on cumulative label probabilities from the top grade down.

The predicted grade is the highest grade k with sum_{j >= k} P(j) >= beta, grades ordered best first;
grades then map to serving tiers (e.g. L4/L3 Good, L2 Mid, L1 Bad). Beta is calibrated on validation
to maximise the tiers' macro-F1 and reported on test.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import CotgenError
from schemas.labels import LabelScheme
from training.metrics import Metrics, compute_metrics, macro_f1


@dataclass(frozen=True)
class Tiers:
    """Tier names best first and the tier of every grade."""

    names: list[str]
    of_grade: dict[str, str]

    def tier(self, grade: str) -> str:
        return self.of_grade[grade]


def build_tiers(scheme: LabelScheme, configured: dict[str, list[str]] | None) -> Tiers:
    """Tiers from config (tier name -> grades); without config every grade is its own tier."""
    if not configured:
        return Tiers(names=scheme.ids, of_grade={g: g for g in scheme.ids})
    of_grade = {grade: tier for tier, grades in configured.items() for grade in grades}
    named = [g for grades in configured.values() for g in grades]
    if sorted(named) != sorted(scheme.ids):
        raise CotgenError(
            f"training.tiers.{scheme.name}: tiers must name every grade of scheme '{scheme.name}' exactly once "
            f"(grades: {', '.join(scheme.ids)}; tiers name: {', '.join(named)})"
        )
    names = sorted(configured, key=lambda t: min(scheme.rank(g) for g in configured[t]))
    return Tiers(names=names, of_grade=of_grade)


def cumpt_grade(probs: dict[str, float], order: list[str], beta: float) -> str:
    """The highest grade whose cumulative probability (it and every better grade) reaches beta."""
    total = 0.0
    for grade in order:
        total += probs.get(grade, 0.0)
        if total >= beta:
            return grade
    return order[-1]


def cumpt_tiers(probs: list[dict[str, float]], scheme: LabelScheme, tiers: Tiers, beta: float) -> list[str]:
    return [tiers.tier(cumpt_grade(p, scheme.ids, beta)) for p in probs]


MAX_CANDIDATES = 400


def candidate_betas(probs: list[dict[str, float]], order: list[str]) -> list[float]:
    """The cumulative sums that occur (predictions only change when beta crosses one), thinned to MAX_CANDIDATES."""
    found = {1.0}
    for p in probs:
        total = 0.0
        for grade in order:
            total += p.get(grade, 0.0)
            found.add(round(min(total, 1.0), 12))
    ordered = sorted(b for b in found if b > 0.0)
    if len(ordered) <= MAX_CANDIDATES:
        return ordered
    stride = (len(ordered) - 1) / (MAX_CANDIDATES - 1)
    return sorted({ordered[round(i * stride)] for i in range(MAX_CANDIDATES)})


@dataclass
class Calibration:
    beta: float
    validation_macro_f1: float
    candidates: int


def calibrate_beta(probs: list[dict[str, float]], gold: list[str], scheme: LabelScheme, tiers: Tiers) -> Calibration:
    """The beta with the best tier macro-F1 on these rows; ties go to the smallest beta."""
    if not probs:
        raise CotgenError("CumPT calibration needs label probabilities for at least one validation row")
    gold_tiers = [tiers.tier(g) for g in gold]
    candidates = candidate_betas(probs, scheme.ids)
    scored = [(macro_f1(gold_tiers, cumpt_tiers(probs, scheme, tiers, b), tiers.names), -b) for b in candidates]
    score, neg_beta = max(scored)
    return Calibration(beta=-neg_beta, validation_macro_f1=score, candidates=len(candidates))


def tier_metrics(probs: list[dict[str, float]], gold: list[str], scheme: LabelScheme, tiers: Tiers,
                 beta: float) -> Metrics:
    """Tier-level metrics at a fixed beta (the binary view: tiers holding a relevant grade)."""
    relevant_tiers = {tiers.tier(g) for g in scheme.relevant}
    return compute_metrics([tiers.tier(g) for g in gold], cumpt_tiers(probs, scheme, tiers, beta), tiers.names,
                           relevant_tiers)
