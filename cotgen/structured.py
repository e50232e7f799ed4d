"""Structured mode: ask for the five steps and the label as one JSON object, and validate the answer.

Free text stays the default (as in TaoSR1); servers with JSON-schema constrained decoding (vLLM,
OpenAI) can be asked for this shape instead. A reply that fails validation falls back to the text parser.
"""

from __future__ import annotations

import json
from typing import Any

from cotgen.prompting import json_keys
from schemas.answer import AnswerOrder, ParsedAnswer, parse_answer
from schemas.labels import LabelScheme
from schemas.sample import STEP_NAMES, Step


def answer_schema(scheme: LabelScheme, order: AnswerOrder) -> dict[str, Any]:
    """JSON schema of a structured answer; property order follows the answer order (label first or last)."""
    props: dict[str, Any] = {}
    for key in json_keys(order):
        props[key] = {"type": "string", "enum": scheme.ids} if key == "label" else {"type": "string"}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def validate(data: object, scheme: LabelScheme) -> list[str]:
    """Why `data` does not match the answer schema (empty when it does)."""
    if not isinstance(data, dict):
        return ["not a JSON object"]
    problems = [f"missing {k}" for k in (*STEP_NAMES, "label") if k not in data]
    problems += [f"unexpected key {k}" for k in data if k not in (*STEP_NAMES, "label")]
    problems += [f"{k} is not a string" for k, v in data.items() if not isinstance(v, str)]
    if isinstance(data.get("label"), str) and data["label"] not in scheme.ids:
        problems.append(f"label {data['label']!r} is not one of {', '.join(scheme.ids)}")
    return problems


def parse_structured(text: str, scheme: LabelScheme) -> ParsedAnswer:
    """A schema-valid JSON answer becomes steps and label; anything else goes through the text parser."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    problems = validate(data, scheme) if data is not None else ["not JSON"]
    if problems:
        parsed = parse_answer(text, scheme)
        note = "structured answer invalid (" + "; ".join(problems[:3]) + ")"
        parsed.reason = f"{note}; {parsed.reason}" if parsed.reason else note
        return parsed
    assert isinstance(data, dict)
    steps = [Step(name=n, text=data[n].strip()) for n in STEP_NAMES]
    parsed = parse_answer(text, scheme)  # the text parser also checks the judgement against the label
    return ParsedAnswer(steps=steps, label=data["label"], status="ok", reason=parsed.reason if not parsed.consistent else "",
                        consistent=parsed.consistent)
