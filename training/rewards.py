"""GRPO rewards with TRL's signature `(prompts, completions, **kwargs) -> list[float | None]`.

Each factory binds a label scheme (and options) and returns a plain named function, so TRL logs it by
name. Completions may be plain strings or conversational message lists. None means "not applicable"
(TRL ignores it), used by the step reward on rows without step annotations.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from schemas.answer import AnswerOrder, find_label, parse_answer
from schemas.errors import CotgenError
from schemas.labels import LabelScheme
from schemas.sample import STEP_NAMES

RewardFunc = Callable[..., list[float | None]]
_WORD = re.compile(r"\w+")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the concatenated contents of its messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


def _column(kwargs: dict[str, Any], name: str, reward: str) -> list[Any]:
    if name not in kwargs:
        raise CotgenError(f"reward {reward}: the dataset has no '{name}' column (columns reach rewards as keyword arguments)")
    return kwargs[name]


def label_reward(scheme: LabelScheme, partial_credit: float = 0.0) -> RewardFunc:
    """1 when the parsed label equals the gold `label` column, `partial_credit` for an adjacent grade, else 0."""

    def label_correctness(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        gold = _column(kwargs, "label", "label_correctness")
        scores: list[float | None] = []
        for completion, target in zip(completions, gold, strict=True):
            predicted = parse_answer(completion_text(completion), scheme).label
            if predicted is None:
                scores.append(0.0)
            elif predicted == target:
                scores.append(1.0)
            elif abs(scheme.rank(predicted) - scheme.rank(target)) == 1:
                scores.append(partial_credit)
            else:
                scores.append(0.0)
        return scores

    return label_correctness


def label_position(text: str, scheme: LabelScheme) -> AnswerOrder | None:
    """Where the label line sits: first line (label_first), last line (cot_first), or neither."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and find_label(lines[0], scheme):
        return "label_first"
    if lines and find_label(lines[-1], scheme):
        return "cot_first"
    return None


def format_reward(scheme: LabelScheme, order: AnswerOrder) -> RewardFunc:
    """Mean of three checks: share of the five steps present, a parsable label, the label where `order` puts it."""

    def answer_format(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        scores: list[float | None] = []
        for completion in completions:
            text = completion_text(completion)
            parsed = parse_answer(text, scheme)
            steps = len({s.name for s in parsed.steps} & set(STEP_NAMES)) / len(STEP_NAMES)
            has_label = parsed.label is not None
            in_place = has_label and label_position(text, scheme) == order
            scores.append((steps + has_label + in_place) / 3)
        return scores

    return answer_format


def token_f1(a: str, b: str) -> float:
    """Word-multiset F1 between two texts: a cheap, deterministic similarity for matching steps."""
    ta, tb = Counter(_WORD.findall(a.lower())), Counter(_WORD.findall(b.lower()))
    overlap = sum((ta & tb).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(ta.values()), overlap / sum(tb.values())
    return 2 * precision * recall / (precision + recall)


def _verify_steps(text: str, references: list[tuple[str, str, bool]], scheme: LabelScheme) -> float | None:
    """Mean over annotated step slots: near a step marked right scores up to 1, near one marked wrong down to 0."""
    produced: dict[str, str] = {}
    for step in parse_answer(text, scheme).steps:
        produced[step.name] = (produced.get(step.name, "") + " " + step.text).strip()
    slots = []
    for name in STEP_NAMES:
        refs = [(ref_text, ok) for ref_name, ref_text, ok in references if ref_name == name]
        if not refs:
            continue
        if name not in produced:
            slots.append(0.0)
            continue
        similarity, ok = max((token_f1(produced[name], ref_text), ok) for ref_text, ok in refs)
        slots.append(0.5 + 0.5 * similarity if ok else 0.5 - 0.5 * similarity)
    return sum(slots) / len(slots) if slots else None


def step_reward(scheme: LabelScheme) -> RewardFunc:
    """TaoSR-SHE's offline verifier: score each step of a rollout against human step marks of the same pair.

    Reads `step_names`, `step_completions`, `step_labels` (see training.data.attach_step_labels); rows
    without marks get None so the label and format rewards alone decide them.
    """

    def step_agreement(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        names = _column(kwargs, "step_names", "step_agreement")
        texts = _column(kwargs, "step_completions", "step_agreement")
        labels = _column(kwargs, "step_labels", "step_agreement")
        return [
            _verify_steps(completion_text(c), list(zip(n, t, lab, strict=True)), scheme)
            for c, n, t, lab in zip(completions, names, texts, labels, strict=True)
        ]

    return step_agreement
