"""Per-annotator figures and agreement: decision rates, time per item, gold accuracy, Cohen's kappa."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from itertools import combinations

from curation.queries import sql
from curation.store import Store


@dataclass
class Decision:
    annotator: str
    item_key: str
    action: str
    seconds: float | None
    label: str
    relabelled: bool
    predicted_label: str | None
    trusted: str | None


@dataclass
class AnnotatorStats:
    annotator: str
    items: int
    skipped: int
    accept_rate: float
    reject_rate: float
    edit_rate: float
    relabel_rate: float
    median_seconds: float | None
    gold_items: int
    gold_label_accuracy: float | None
    gold_wrong_accepts: int


@dataclass
class Agreement:
    annotator_a: str
    annotator_b: str
    items: int
    label_kappa: float | None
    decision_items: int
    decision_kappa: float | None


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters over the same items; None when undefined (no items, or chance agreement 1)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] * cb[c] for c in ca.keys() | cb.keys()) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def latest_decisions(store: Store) -> list[Decision]:
    return [Decision(*row) for row in store.rows(sql("review.latest_decisions"))]


def _rate(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def annotator_stats(decisions: list[Decision]) -> list[AnnotatorStats]:
    by: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        by[d.annotator].append(d)
    out = []
    for name, ds in sorted(by.items()):
        items = [d for d in ds if d.action != "skip"]
        acts = Counter(d.action for d in items)
        times = [d.seconds for d in items if d.seconds is not None]
        gold = [d for d in items if d.trusted is not None]
        out.append(AnnotatorStats(
            annotator=name, items=len(items), skipped=len(ds) - len(items),
            accept_rate=_rate(acts["accept"], len(items)), reject_rate=_rate(acts["reject"], len(items)),
            edit_rate=_rate(acts["edit"], len(items)),
            relabel_rate=_rate(sum(d.relabelled for d in items), len(items)),
            median_seconds=round(statistics.median(times), 3) if times else None,
            gold_items=len(gold),
            gold_label_accuracy=_rate(sum(d.label == d.trusted for d in gold), len(gold)) if gold else None,
            gold_wrong_accepts=sum(d.action == "accept" and d.predicted_label is not None
                                   and d.predicted_label != d.trusted for d in gold),
        ))
    return out


def _kappa(a: list[str], b: list[str]) -> float | None:
    k = cohen_kappa(a, b)
    return None if k is None else round(k, 4)


def agreement(decisions: list[Decision]) -> list[Agreement]:
    """Kappa for every pair of annotators who both finished some items: on labels, and on accept/reject."""
    by_item: dict[str, dict[str, Decision]] = defaultdict(dict)
    for d in decisions:
        if d.action != "skip":
            by_item[d.item_key][d.annotator] = d
    shared: dict[tuple[str, str], list[tuple[Decision, Decision]]] = defaultdict(list)
    for raters in by_item.values():
        for a, b in combinations(sorted(raters), 2):
            shared[(a, b)].append((raters[a], raters[b]))
    out = []
    for (a, b), pairs in sorted(shared.items()):
        both = [(x, y) for x, y in pairs if x.action in ("accept", "reject") and y.action in ("accept", "reject")]
        out.append(Agreement(
            annotator_a=a, annotator_b=b, items=len(pairs),
            label_kappa=_kappa([x.label for x, _ in pairs], [y.label for _, y in pairs]),
            decision_items=len(both),
            decision_kappa=_kappa([x.action for x, _ in both], [y.action for _, y in both]),
        ))
    return out


def review_stats(store: Store) -> dict:
    """Everything `cotgen review stats` prints."""
    decisions = latest_decisions(store)
    return {
        "annotators": [asdict(s) for s in annotator_stats(decisions)],
        "agreement": [asdict(a) for a in agreement(decisions)],
        "reviews": store.scalar(sql("review.count_reviews")),
    }
