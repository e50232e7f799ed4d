"""Classification metrics for graded relevance: per-class and macro F1, accuracy, quadratic weighted kappa.

Own implementation (no scikit-learn at run time); tests check every figure against scikit-learn.
A prediction of None (an answer that did not parse) is wrong for accuracy and recall, is no class's
false positive, and is left out of the kappa, as scikit-learn does for labels outside `labels`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from schemas.labels import LabelScheme


@dataclass
class ClassScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Metrics:
    """Every figure `cotgen eval` reports; `confusion[i][j]` counts gold labels[i] predicted as labels[j]."""

    labels: list[str]
    n: int
    parsed: int
    accuracy: float
    macro_f1: float
    qwk: float
    binary_f1: float
    per_class: dict[str, ClassScore] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    unparsed_by_gold: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def confusion_matrix(gold: list[str], pred: list[str | None], labels: list[str]) -> list[list[int]]:
    """Rows are gold, columns predicted, both in `labels` order; pairs with either side outside `labels` are skipped."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        if g in index and p in index:
            matrix[index[g]][index[p]] += 1
    return matrix


def class_scores(gold: list[str], pred: list[str | None], labels: list[str]) -> dict[str, ClassScore]:
    scores = {}
    for label in labels:
        tp = sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p == label)
        predicted = sum(1 for p in pred if p == label)
        support = sum(1 for g in gold if g == label)
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        scores[label] = ClassScore(precision, recall, _f1(precision, recall), support)
    return scores


def macro_f1(gold: list[str], pred: list[str | None], labels: list[str]) -> float:
    """Mean F1 over the labels that occur in gold or predictions (a class absent from both says nothing)."""
    seen = set(gold) | set(pred)
    present = [label for label in labels if label in seen]
    scores = class_scores(gold, pred, present)
    return _ratio(sum(s.f1 for s in scores.values()), len(present))


def quadratic_weighted_kappa(gold: list[str], pred: list[str | None], labels: list[str]) -> float:
    """Cohen's kappa with quadratic weights over the ordered `labels` (the grades are ordinal)."""
    matrix = confusion_matrix(gold, pred, labels)
    k = len(labels)
    total = sum(map(sum, matrix))
    if total == 0 or k < 2:
        return 0.0
    rows = [sum(r) for r in matrix]
    cols = [sum(matrix[i][j] for i in range(k)) for j in range(k)]
    observed = expected = 0.0
    for i in range(k):
        for j in range(k):
            weight = (i - j) ** 2 / (k - 1) ** 2
            observed += weight * matrix[i][j]
            expected += weight * rows[i] * cols[j] / total
    return 1.0 - _ratio(observed, expected) if expected else 1.0


def binary_f1(gold: list[str], pred: list[str | None], relevant: set[str]) -> float:
    """F1 of the binary view: positive = a grade in the scheme's relevant set (an unparsed answer is negative)."""
    tp = sum(1 for g, p in zip(gold, pred, strict=True) if g in relevant and p in relevant)
    fp = sum(1 for g, p in zip(gold, pred, strict=True) if g not in relevant and p in relevant)
    fn = sum(1 for g, p in zip(gold, pred, strict=True) if g in relevant and p not in relevant)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def compute_metrics(gold: list[str], pred: list[str | None], labels: list[str], relevant: set[str]) -> Metrics:
    """All figures for predictions over an ordered label list (best first) and its relevant set."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    accuracy = _ratio(sum(1 for g, p in zip(gold, pred, strict=True) if g == p), len(gold))
    unparsed = [sum(1 for g, p in zip(gold, pred, strict=True) if g == label and p not in labels) for label in labels]
    return Metrics(
        labels=list(labels),
        n=len(gold),
        parsed=sum(1 for p in pred if p in labels),
        accuracy=accuracy,
        macro_f1=macro_f1(gold, pred, labels),
        qwk=quadratic_weighted_kappa(gold, pred, labels),
        binary_f1=binary_f1(gold, pred, relevant),
        per_class=class_scores(gold, pred, labels),
        confusion=confusion_matrix(gold, pred, labels),
        unparsed_by_gold=unparsed,
    )


def scheme_metrics(gold: list[str], pred: list[str | None], scheme: LabelScheme) -> Metrics:
    return compute_metrics(gold, pred, scheme.ids, set(scheme.relevant))
