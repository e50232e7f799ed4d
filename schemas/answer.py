"""The answer format every layer agrees on: render a CoT target, parse model output back.

Parsing is pure text work, so it lives at the bottom layer: generation parses samples, curation
renders training targets, training's rewards parse rollouts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from schemas.labels import LabelScheme
from schemas.sample import STEP_NAMES, ParseStatus, Step

AnswerOrder = Literal["cot_first", "label_first"]

STEP_TITLES = {
    "query_understanding": "Query understanding",
    "item_understanding": "Item understanding",
    "category_matching": "Category matching",
    "attribute_matching": "Attribute matching",
    "relevance_judgement": "Relevance judgement",
}
LABEL_LINE = "Label: {label}"


def render_cot(steps: list[Step]) -> str:
    lines = []
    for i, step in enumerate(steps, start=1):
        title = STEP_TITLES.get(step.name, step.name.replace("_", " ").capitalize())
        lines.append(f"{i}. {title}: {step.text.strip()}")
    return "\n".join(lines)


def render_answer(steps: list[Step], label: str, order: AnswerOrder) -> str:
    """The assistant text a model is trained to write: `Label: L3` first (post-CoT) or last."""
    cot = render_cot(steps)
    head = LABEL_LINE.format(label=label)
    return f"{head}\n{cot}" if order == "label_first" else f"{cot}\n{head}"


@dataclass
class ParsedAnswer:
    steps: list[Step] = field(default_factory=list)
    label: str | None = None
    status: ParseStatus = "ok"
    reason: str = ""
    consistent: bool = True


_STEP_ALIASES = {
    "query_understanding": ("query understanding", "query analysis", "understanding the query", "query intent"),
    "item_understanding": ("item understanding", "product understanding", "item analysis", "product analysis"),
    "category_matching": ("category matching", "category match", "category"),
    "attribute_matching": ("attribute matching", "attribute match", "attributes"),
    "relevance_judgement": ("relevance judgement", "relevance judgment", "judgement", "judgment", "conclusion"),
}
_HEADER = re.compile(
    r"^\s*(?:#+\s*)?(?:\*\*)?\s*(?:step\s*)?(\d+)?[.):]?\s*(?:\*\*)?\s*([A-Za-z][A-Za-z ]{2,40}?)\s*(?:\*\*)?\s*[:\-–]\s*(?:\*\*)?(.*)$",
    re.IGNORECASE,
)


def _step_name(title: str) -> str | None:
    t = title.strip().lower()
    for name, aliases in _STEP_ALIASES.items():
        if any(t == a or t.startswith(a) for a in aliases):
            return name
    return None


def _split_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    for line in text.splitlines():
        m = _HEADER.match(line)
        name = _step_name(m.group(2)) if m else None
        if name:
            steps.append(Step(name=name, text=m.group(3).strip()))
        elif steps and line.strip() and not _is_label_line(line):
            steps[-1].text = (steps[-1].text + "\n" + line.strip()).strip()
    return steps


_LABEL_RE = re.compile(r"(?:final\s+)?(?:label|grade|relevance(?:\s+label)?)\s*[:=]\s*\**\s*([A-Za-z0-9][\w ]*)", re.IGNORECASE)


def _is_label_line(line: str) -> bool:
    return bool(re.match(r"^\s*\**\s*(?:final\s+)?(?:label|grade)\s*[:=]", line, re.IGNORECASE))


def _match_grade(candidate: str, scheme: LabelScheme) -> str | None:
    lookup = scheme.raw_lookup()
    words = candidate.strip().strip("*.`'\"").lower()
    if words in lookup:
        return lookup[words]
    for token in re.split(r"[\s,;()]+", words):
        if token in lookup:
            return lookup[token]
    return None


def find_label(text: str, scheme: LabelScheme) -> str | None:
    """The last explicit `Label: X` in the text, as a grade id of `scheme`."""
    found = None
    for m in _LABEL_RE.finditer(text):
        grade = _match_grade(m.group(1), scheme)
        if grade:
            found = grade
    return found


def parse_answer(text: str, scheme: LabelScheme) -> ParsedAnswer:
    """Steps and final label from free model text; never raises, reports a status and reason instead."""
    if not text or not text.strip():
        return ParsedAnswer(status="empty", reason="empty output")
    steps = _split_steps(text)
    label = find_label(text, scheme)
    if label is None:
        return ParsedAnswer(steps=steps, status="no_label", reason="no label found")
    missing = [n for n in STEP_NAMES if n not in {s.name for s in steps}]
    status: ParseStatus = "ok" if not missing else "partial"
    reason = "" if not missing else "missing steps: " + ", ".join(missing)
    consistent = True
    judgement = next((s for s in steps if s.name == "relevance_judgement"), None)
    if judgement:
        said = find_label(judgement.text, scheme) or _match_grade(judgement.text, scheme)
        if said and said != label:
            consistent = False
            reason = (reason + "; " if reason else "") + f"judgement says {said} but the label is {label}"
    return ParsedAnswer(steps=steps, label=label, status=status, reason=reason, consistent=consistent)
