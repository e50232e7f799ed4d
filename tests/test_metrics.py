"""Metrics against scikit-learn on fixed predictions (own implementation; scikit-learn is the referee)."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from schemas.labels import BUILTIN_SCHEMES
from training.metrics import compute_metrics, quadratic_weighted_kappa, scheme_metrics

SCHEME = BUILTIN_SCHEMES["crowdflower"]
IDS = SCHEME.ids


def fixed_predictions(n: int, seed: int, unparsed: float = 0.1) -> tuple[list[str], list[str | None]]:
    """Gold skewed like CrowdFlower (L4-heavy); predictions right ~half the time, off by one or unparsed otherwise."""
    rng = random.Random(seed)
    gold = rng.choices(IDS, weights=[59, 17, 15, 9], k=n)
    pred: list[str | None] = []
    for g in gold:
        r = rng.random()
        if r < unparsed:
            pred.append(None)
        elif r < 0.55:
            pred.append(g)
        else:
            pred.append(rng.choice(IDS))
    return gold, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed: int) -> None:
    gold, pred = fixed_predictions(300, seed)
    m = scheme_metrics(gold, pred, SCHEME)
    sk_pred = [p if p is not None else "none" for p in pred]

    assert m.accuracy == pytest.approx(accuracy_score(gold, sk_pred))
    precision, recall, f1, support = precision_recall_fscore_support(gold, sk_pred, labels=IDS, zero_division=0)
    for i, label in enumerate(IDS):
        assert m.per_class[label].precision == pytest.approx(precision[i])
        assert m.per_class[label].recall == pytest.approx(recall[i])
        assert m.per_class[label].f1 == pytest.approx(f1[i])
        assert m.per_class[label].support == support[i]
    assert m.macro_f1 == pytest.approx(f1_score(gold, sk_pred, labels=IDS, average="macro", zero_division=0))
    assert m.qwk == pytest.approx(cohen_kappa_score(gold, sk_pred, labels=IDS, weights="quadratic"))
    relevant = set(SCHEME.relevant)
    assert m.binary_f1 == pytest.approx(f1_score([g in relevant for g in gold], [p in relevant for p in sk_pred]))
    assert m.confusion == confusion_matrix(gold, sk_pred, labels=IDS).tolist()
    assert m.parsed == sum(p is not None for p in pred)
    assert sum(map(sum, m.confusion)) + sum(m.unparsed_by_gold) == len(gold)


def test_macro_f1_skips_classes_absent_from_gold_and_predictions() -> None:
    gold = ["L4", "L4", "L3", "L3", "L4"]
    pred = ["L4", "L3", "L3", None, "L4"]
    m = scheme_metrics(gold, pred, SCHEME)
    assert m.macro_f1 == pytest.approx(f1_score(gold, [p or "none" for p in pred], labels=["L4", "L3"], average="macro"))
    assert m.per_class["L1"].support == 0 and m.per_class["L1"].f1 == 0.0


def test_qwk_on_hand_computed_case() -> None:
    # confusion [[1, 1], [0, 2]]: weight 1 off the diagonal, so observed disagreement = 1;
    gold = ["L4", "L4", "L3", "L3"]
    pred = ["L4", "L3", "L3", "L3"]
    # rows (2, 2), cols (1, 3): expected off-diagonal mass = 2*3/4 + 2*1/4 = 2, observed = 1 -> kappa 1 - 1/2
    assert quadratic_weighted_kappa(gold, pred, ["L4", "L3"]) == pytest.approx(0.5)
    assert quadratic_weighted_kappa(gold, gold, ["L4", "L3"]) == pytest.approx(1.0)


def test_binary_f1_on_a_custom_relevant_set() -> None:
    gold, pred = fixed_predictions(200, 7)
    m = compute_metrics(gold, pred, IDS, {"L4"})
    assert m.binary_f1 == pytest.approx(f1_score([g == "L4" for g in gold], [p == "L4" for p in pred]))


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        compute_metrics(["L4", "L3"], ["L4"], IDS, {"L4"})
