"""The answer format every layer agrees on: render a CoT target, parse model output back.

Parsing is pure text work, so it lives at the bottom layer: generation parses samples, curation
renders training targets, training's rewards parse rollouts. The parser takes real model output:
markdown headers, numbering, bold, extra prose, <think> blocks, JSON-ish objects, a label written
as a grade id, a grade name or a raw value. It never raises: a sample carries a status and a reason.

It reads tolerantly (a label and steps wherever they are, for statistics and review) but grades
strictly: `ok` only when the `Label:` line is where the format puts it (first line for label_first,
last for cot_first; either when the order is not known) and the five steps are present, titled and
non-empty. Anything else with a label is `partial`, which training data never uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
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
# Notes a strict grading adds to the reason; curation names its drop reasons after them.
NOTE_LABEL_MISPLACED = "label not where the format puts it"
NOTE_STEPS_MISSING = "missing steps"
NOTE_STEPS_EMPTY = "empty steps"
NOTE_BY_POSITION = "steps matched by position"


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
    label_at: str | None = None  # first | last | field (JSON) | elsewhere: where the final label was found


_WORD = re.compile(r"\w+")


def max_ngram_repeats(text: str | None, n: int = 3) -> int:
    """How often the most frequent word n-gram occurs (case-folded): the trial's noise repeated one
    three-word phrase four or more times."""
    words = _WORD.findall((text or "").lower())
    if len(words) < n:
        return 0
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        counts[gram] = counts.get(gram, 0) + 1
    return max(counts.values())


# ---------------------------------------------------------------------------- step titles
_STEP_ALIASES = {
    "query_understanding": ("query understanding", "understanding the query", "query analysis", "query intent",
                            "query interpretation", "understand the query", "analyze the query", "analyse the query",
                            "search intent", "user intent", "query"),
    "item_understanding": ("item understanding", "product understanding", "understanding the item",
                           "understanding the product", "item analysis", "product analysis", "item description",
                           "product description", "understand the item", "understand the product", "item", "product"),
    "category_matching": ("category matching", "category match", "category comparison", "category alignment",
                          "category check", "category"),
    "attribute_matching": ("attribute matching", "attributes matching", "attribute match", "attribute comparison",
                           "attribute check", "attributes", "attribute"),
    "relevance_judgement": ("relevance judgement", "relevance judgment", "relevance assessment", "relevance decision",
                            "final judgement", "final judgment", "judgement", "judgment", "conclusion", "verdict"),
}
# Bare words like "query" or "item" open a step only when numbered or set as a header, never as `Query: text`.
_WEAK_ALIASES = {"query", "item", "product", "category", "attributes", "attribute"}
_TITLE_TO_STEP = {alias: name for name, aliases in _STEP_ALIASES.items() for alias in aliases}
_MARKUP = re.compile(r"[*_`]+")
_PREFIX = re.compile(r"^\s*(?:#{1,6}\s*|>\s*|[-+•]\s+)*")
_HEADER = re.compile(
    r"^(?P<step>step\s*)?(?P<num>\d+)?\s*[.):]?\s*(?:step\s*\d+\s*[.):\-–—]?\s*)?"
    r"(?P<title>[A-Za-z][A-Za-z &/'\-]{1,60}?)\s*(?:\([^)]*\))?\s*(?:(?P<sep>[:\-–—])\s*(?P<rest>.*))?$",
    re.IGNORECASE,
)
_NUMBERED = re.compile(r"^\s*(?:step\s*)?(?P<num>[1-9])\s*[.):]\s+(?P<rest>\S.*)$", re.IGNORECASE)
_TAG = re.compile(r"</?(?:reasoning|analysis|steps?|answer|output|response|final)>", re.IGNORECASE)
_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>")


def _header(line: str) -> tuple[str, str, bool] | None:
    """(step name, text on the same line, numbered) when `line` opens a step."""
    plain = _MARKUP.sub("", _PREFIX.sub("", line)).strip()
    m = _HEADER.match(plain)
    if not m:
        return None
    title = " ".join(m.group("title").lower().split()).strip(" -'")
    name = _TITLE_TO_STEP.get(title)
    if name is None:
        return None
    numbered = bool(m.group("num") or m.group("step"))
    decorated = plain != line.strip()  # bold, a markdown header, a bullet
    rest = (m.group("rest") or "").strip()
    if title in _WEAK_ALIASES and not (numbered or (decorated and not rest)):
        return None
    if not m.group("sep") and not (numbered or decorated):
        return None  # a bare line of prose that happens to be a title
    return name, rest, numbered


def _split_steps(text: str) -> tuple[list[Step], str]:
    """Steps by their titles; failing that, five numbered items by position. Returns (steps, note)."""
    steps: dict[str, list[str]] = {}
    current: str | None = None
    repeated = False
    for line in text.splitlines():
        if _label_in_line(line):
            current = None  # text after a label line is not part of the last step
            continue
        head = _header(line)
        if head:
            name, rest, _ = head
            if name in steps:
                repeated, current = True, None
                continue
            steps[name] = [rest] if rest else []
            current = name
        elif current and line.strip():
            steps[current].append(line.strip())
    if steps:
        note = "steps repeated; kept the first of each" if repeated else ""
        return [Step(name=n, text="\n".join(t).strip()) for n, t in steps.items()], note
    numbered = [m for m in (_NUMBERED.match(_MARKUP.sub("", line)) for line in text.splitlines()) if m]
    if [int(m.group("num")) for m in numbered] == [1, 2, 3, 4, 5]:  # five untitled steps, in order
        return [Step(name=n, text=m.group("rest").strip()) for n, m in zip(STEP_NAMES, numbered, strict=True)], \
            NOTE_BY_POSITION
    return [], ""


# ---------------------------------------------------------------------------- labels
_LABEL_KEYS = r"(?:final\s+|predicted\s+|relevance\s+)?(?:label|grade|rating|relevance|answer|verdict|classification)"
_LABEL_LINE = re.compile(rf"^\W*{_LABEL_KEYS}\W{{0,3}}\s*[:=：]\s*(?P<value>.+)$", re.IGNORECASE)
_LABEL_INLINE = re.compile(rf"\b{_LABEL_KEYS}\s+(?:is|should\s+be|would\s+be|=)\s*:?\s*(?P<value>[^\n.;,]+)", re.IGNORECASE)
_LABEL_TAG = re.compile(r"<(?:label|grade)>\s*(?P<value>[^<]+?)\s*</(?:label|grade)>", re.IGNORECASE)


@lru_cache(maxsize=64)
def _compiled(spellings: tuple[tuple[str, str], ...]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(rf"{re.escape(s)}(?![\w-])", re.IGNORECASE), g) for s, g in spellings]


def _spellings(scheme: LabelScheme) -> list[tuple[re.Pattern[str], str]]:
    """Every accepted spelling of a grade (ids, names, raw values), longest first."""
    table = scheme.raw_lookup()
    return _compiled(tuple((s, table[s]) for s in sorted(table, key=len, reverse=True)))


def _match_grade(value: str, scheme: LabelScheme) -> str | None:
    """The grade a label value starts with (`L3 (Related)`, `**Related**`, `3`); prose like `I think L3` is not a value."""
    v = _MARKUP.sub("", value).strip().lstrip("\"'([{<:= ").strip()
    for pattern, grade in _spellings(scheme):
        if pattern.match(v):
            return grade
    return None


def _label_in_line(line: str) -> bool:
    return bool(_LABEL_LINE.match(_MARKUP.sub("", line)))


def _labels(text: str, scheme: LabelScheme) -> list[str]:
    """Explicit labels in order of appearance: `Label: X` lines, <label> tags, `the label is X`."""
    found: list[tuple[int, str]] = []
    offset = 0
    for line in text.splitlines(keepends=True):
        m = _LABEL_LINE.match(_MARKUP.sub("", line))
        grade = _match_grade(m.group("value"), scheme) if m else None
        if grade:
            found.append((offset, grade))
        offset += len(line)
    for pattern in (_LABEL_TAG, _LABEL_INLINE):
        for m in pattern.finditer(text):
            grade = _match_grade(m.group("value"), scheme)
            if grade:
                found.append((m.start(), grade))
    return [g for _, g in sorted(found)]


def _bare_label(text: str, scheme: LabelScheme) -> str | None:
    """A last line that is nothing but a grade (`L3`, `**Related**`)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    last = _MARKUP.sub("", lines[-1]).strip().strip(".")
    return scheme.raw_lookup().get(last.lower())


def find_label(text: str, scheme: LabelScheme) -> str | None:
    """The last explicit label in the text (`Label: X` and similar), as a grade id of `scheme`."""
    labels = _labels(text, scheme)
    return labels[-1] if labels else None


def _mentions(text: str, scheme: LabelScheme) -> list[str]:
    """Grades a passage names, by id or by name as written in the scheme (so prose "related" is not a grade)."""
    labels = _labels(text, scheme)
    if labels:
        return labels
    hits: list[tuple[int, str]] = []
    for g in scheme.grades:
        # One-letter ids (ESCI's "I", "E") are ordinary words in prose; only their names count there.
        for spelling in {g.id, g.name} if len(g.id) > 1 else {g.name}:
            hits += [(m.start(), g.id) for m in re.finditer(rf"(?<![\w-]){re.escape(spelling)}(?![\w-])", text)]
    return [g for _, g in sorted(hits)]


# ---------------------------------------------------------------------------- JSON answers
_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_PAIR = re.compile(r"[\"'](?P<key>[A-Za-z_ ]+)[\"']\s*:\s*(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"?|'(?P<sq>[^']*)'?)", re.DOTALL)


def json_object(text: str) -> dict | None:
    """The answer as a dict when the text is (or contains) a JSON-ish object; tolerant of truncation."""
    m = _FENCE.search(text)
    candidate = m.group(1) if m else text[text.find("{"):text.rfind("}") + 1] if "{" in text else ""
    if candidate:
        for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
            try:
                data = json.loads(attempt)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    if "{" not in text:
        return None
    pairs = {m.group("key"): m.group("dq") if m.group("dq") is not None else m.group("sq") for m in _PAIR.finditer(text)}
    return {k: v.replace('\\"', '"').replace("\\n", "\n") for k, v in pairs.items() if v is not None} or None


def _from_json(data: dict, scheme: LabelScheme) -> tuple[list[Step], str | None]:
    steps: dict[str, str] = {}
    label = None
    items = list(data.items())
    nested = data.get("steps")
    if isinstance(nested, dict):
        items += list(nested.items())
    elif isinstance(nested, list):
        for i, entry in enumerate(nested):
            if isinstance(entry, dict):
                title = str(entry.get("name") or entry.get("step") or entry.get("title") or "")
                body = entry.get("text") or entry.get("content") or entry.get("reasoning") or ""
                items.append((title or (STEP_NAMES[i] if i < len(STEP_NAMES) else ""), body))
            elif isinstance(entry, str) and i < len(STEP_NAMES):
                items.append((STEP_NAMES[i], entry))
    for key, value in items:
        norm = " ".join(str(key).replace("_", " ").lower().split())
        if norm in {"label", "grade", "final label", "relevance label", "relevance", "answer", "rating"}:
            label = label or (_match_grade(str(value), scheme) if isinstance(value, (str, int)) else None)
            continue
        name = _TITLE_TO_STEP.get(norm) or (norm.replace(" ", "_") if norm.replace(" ", "_") in STEP_NAMES else None)
        if name and isinstance(value, (str, int, float)) and name not in steps:
            steps[name] = str(value).strip()
    return [Step(name=n, text=t) for n, t in steps.items()], label


# ---------------------------------------------------------------------------- parse
def _split_think(text: str) -> tuple[str, str, bool]:
    """(answer outside <think>, thinking, whether a <think> block was left open)."""
    thinking = "\n".join(re.findall(r"<think>(.*?)</think>", text, re.DOTALL | re.IGNORECASE))
    outside = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL | re.IGNORECASE)
    unclosed = re.search(r"<think>", outside, re.IGNORECASE)
    if unclosed:
        thinking += "\n" + outside[unclosed.end():]
        outside = outside[: unclosed.start()]
    elif re.search(r"</think>", outside, re.IGNORECASE):  # templates that open the block in the prompt
        head, _, outside = re.split(r"(</think>)", outside, maxsplit=1, flags=re.IGNORECASE)
        thinking += "\n" + head
    return outside, thinking, bool(unclosed)


def parse_answer(text: str, scheme: LabelScheme, order: AnswerOrder | None = None) -> ParsedAnswer:
    """Steps and final label from free model text; never raises, reports a status and reason instead.

    `order` is the answer format the text should follow; None accepts the label line first or last."""
    try:
        return _parse(text, scheme, order)
    except Exception as e:  # noqa: BLE001 - a parser bug must not lose a sample; it is reported instead
        return ParsedAnswer(status="error", reason=f"parser error: {type(e).__name__}: {e}")


def _label_at(outside: str, label: str, scheme: LabelScheme) -> str:
    """Where the final label sits: on the first or the last non-empty line as a `Label:` line, or elsewhere."""
    lines = [ln for ln in outside.splitlines() if ln.strip()]
    for where, line in (("last", lines[-1] if lines else ""), ("first", lines[0] if lines else "")):
        m = _LABEL_LINE.match(_MARKUP.sub("", line))
        if m and _match_grade(m.group("value"), scheme) == label:
            return where
    return "elsewhere"


# Judgement wording that takes a side without naming a grade ("The item matches", "not relevant").
_NEGATIVE = re.compile(r"\b(?:does\s+not|doesn't|do\s+not|don't|not|no\s+longer|never)\s+(?:\w+\s+)?"
                       r"(?:match(?:es)?|relevant|fit(?:s)?|related|satisf(?:y|ies))\b|\b(?:irrelevant|unrelated|mismatch(?:es|ed)?)\b",
                       re.IGNORECASE)
_POSITIVE = re.compile(r"\b(?:match(?:es)?|relevant|fits|exactly\s+what)\b", re.IGNORECASE)


def _polarity(text: str) -> str | None:
    """'no' when the passage says the item does not match, 'yes' when it says it does, else None."""
    if _NEGATIVE.search(text):
        return "no"
    return "yes" if _POSITIVE.search(text) else None


def _contradicts(judgement: str, label: str, scheme: LabelScheme) -> bool:
    """A judgement naming no grade still contradicts the extremes: "it matches" under the lowest grade,
    "it does not match" under the best one."""
    side = _polarity(judgement)
    return (side == "yes" and label == scheme.ids[-1]) or (side == "no" and label == scheme.ids[0])


def _strict_notes(steps: list[Step], label_at: str, order: AnswerOrder | None, notes: list[str]) -> list[str]:
    """Why an answer with a label is not clean training data (empty: it is)."""
    problems = []
    names = {s.name for s in steps}
    missing = [n for n in STEP_NAMES if n not in names]
    if missing:
        problems.append(f"{NOTE_STEPS_MISSING}: " + ", ".join(missing))
    empty = [s.name for s in steps if s.name in STEP_NAMES and not s.text.strip()]
    if empty:
        problems.append(f"{NOTE_STEPS_EMPTY}: " + ", ".join(empty))
    wanted = {"label_first": ("first",), "cot_first": ("last",), None: ("first", "last")}[order]
    if label_at not in (*wanted, "field"):
        problems.append(NOTE_LABEL_MISPLACED)
    if NOTE_BY_POSITION in notes:
        problems.append(NOTE_BY_POSITION)
    return problems


def _parse(text: str, scheme: LabelScheme, order: AnswerOrder | None = None) -> ParsedAnswer:
    if not text or not text.strip():
        return ParsedAnswer(status="empty", reason="empty output")
    clean = _TAG.sub("", _SPECIAL.sub("", text))
    outside, thinking, unclosed = _split_think(clean)
    notes: list[str] = []
    data = json_object(outside)
    steps, json_label = _from_json(data, scheme) if data else ([], None)
    if not steps:
        steps, note = _split_steps(outside)
        if not steps and thinking.strip():
            steps, note = _split_steps(thinking)
        notes += [note] if note else []
    labels = _labels(outside, scheme)
    label = json_label or (labels[-1] if labels else None) or _bare_label(outside, scheme)
    if label is None and thinking.strip():
        inner = _labels(thinking, scheme)
        if inner:
            label = inner[-1]
            notes.append("label found only inside <think>")
    if len(set(labels)) > 1 and not json_label:
        notes.append(f"several labels ({', '.join(dict.fromkeys(labels))}); the last one counts")
    judgement = next((s for s in steps if s.name == "relevance_judgement"), None)
    said = _mentions(judgement.text, scheme) if judgement else []
    inferred = False
    if label is None and len(set(said)) == 1:
        label, inferred = said[0], True
        notes.append("no label line; label taken from the judgement step")
    if label is None:
        why = "unfinished <think> block" if unclosed and not outside.strip() else "no label found"
        return ParsedAnswer(steps=steps, status="no_label", reason="; ".join([why, *notes]))
    label_at = "field" if json_label else "elsewhere" if inferred else _label_at(outside, label, scheme)
    problems = _strict_notes(steps, label_at, order, notes)
    if said:
        consistent = label in said
        if not consistent:
            notes.append(f"judgement says {said[-1]} but the label is {label}")
    else:
        consistent = not (judgement and _contradicts(judgement.text, label, scheme))
        if not consistent:
            notes.append(f"judgement says the item {'matches' if _polarity(judgement.text) == 'yes' else 'does not match'}"
                         f" but the label is {label}")
    status: ParseStatus = "partial" if problems else "ok"
    reason = "; ".join([*notes, *(p for p in problems if p not in notes)])
    return ParsedAnswer(steps=steps, label=label, status=status, reason=reason, consistent=consistent, label_at=label_at)
