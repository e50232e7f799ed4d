"""The answer parser against a corpus of realistic model outputs, well-formed and malformed."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from schemas.answer import find_label, parse_answer, render_answer
from schemas.labels import BUILTIN_SCHEMES
from schemas.sample import STEP_NAMES, Step

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "parser_corpus.jsonl").read_text().splitlines() if line]


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 40
    assert {e["status"] for e in CORPUS} >= {"ok", "partial", "no_label", "empty"}
    assert {e["scheme"] for e in CORPUS} >= {"taosr4", "crowdflower", "esci", "wands", "homedepot"}
    assert any(not e["consistent"] for e in CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[e["id"] for e in CORPUS])
def test_corpus_case(case: dict) -> None:
    parsed = parse_answer(case["text"], BUILTIN_SCHEMES[case["scheme"]])
    assert parsed.label == case["label"]
    assert parsed.status == case["status"], parsed.reason
    assert parsed.consistent == case["consistent"], parsed.reason
    if "steps" in case:
        assert [s.name for s in parsed.steps] == case["steps"]
        assert all(s.text for s in parsed.steps), "every found step keeps its text"
    if "reason" in case:
        assert case["reason"] in parsed.reason


@pytest.mark.parametrize("scheme_name", sorted(BUILTIN_SCHEMES))
@pytest.mark.parametrize("order", ["cot_first", "label_first"])
def test_rendered_answers_parse_back(scheme_name: str, order: str) -> None:
    scheme = BUILTIN_SCHEMES[scheme_name]
    for grade in scheme.grades:
        steps = [Step(name=n, text=f"reasoning for {n.replace('_', ' ')}") for n in STEP_NAMES[:-1]]
        steps.append(Step(name="relevance_judgement", text=f"so the grade is {grade.id}"))
        parsed = parse_answer(render_answer(steps, grade.id, order), scheme)  # type: ignore[arg-type]
        assert (parsed.label, parsed.status, parsed.consistent) == (grade.id, "ok", True)
        assert [s.text for s in parsed.steps] == [s.text for s in steps]


def test_never_raises_on_garbage() -> None:
    rng = random.Random(7)
    alphabet = "Label: L1234{}[]\"'<think></think>#*-\n 1.Query understanding:\\`json"
    scheme = BUILTIN_SCHEMES["taosr4"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        parsed = parse_answer(text, scheme)
        assert parsed.status in {"ok", "partial", "no_label", "empty", "error"}
        assert parsed.label is None or parsed.label in scheme.ids


def test_find_label_takes_the_last_explicit_label() -> None:
    scheme = BUILTIN_SCHEMES["taosr4"]
    assert find_label("Label: L4\nreasoning\nLabel: L2", scheme) == "L2"
    assert find_label("I think it is related", scheme) is None


# The policy answer the trial stored as `ok` (label L4, "steps matched by position") and exported as the only
# policy-chosen DPO row: no `Label:` line, a first line saying L1, five untitled steps.
JUNK = ("L1 - Irrelevant\n"
        "1. The item matches.\n2. The item matches.\n3. The item matches.\n4. The item matches.\n"
        "5. The item matches, so the grade is L4.")


def test_junk_answer_is_partial_but_still_read() -> None:
    parsed = parse_answer(JUNK, BUILTIN_SCHEMES["crowdflower"])
    assert parsed.status == "partial" and parsed.label == "L4"  # the tolerant reading stays, for statistics
    assert "label not where the format puts it" in parsed.reason and "by position" in parsed.reason


@pytest.mark.parametrize("order", ["cot_first", "label_first"])
def test_label_must_sit_where_the_format_puts_it(order: str) -> None:
    scheme = BUILTIN_SCHEMES["taosr4"]
    steps = [Step(name=n, text=f"reasoning for {n}, so L3") for n in STEP_NAMES]
    text = render_answer(steps, "L3", order)  # type: ignore[arg-type]
    other = "label_first" if order == "cot_first" else "cot_first"
    assert parse_answer(text, scheme, order).status == "ok"  # type: ignore[arg-type]
    misplaced = parse_answer(text, scheme, other)  # type: ignore[arg-type]
    assert (misplaced.status, misplaced.label) == ("partial", "L3")
    assert parse_answer(text, scheme).status == "ok"  # order unknown: first or last line both count


def test_empty_step_is_partial() -> None:
    scheme = BUILTIN_SCHEMES["taosr4"]
    steps = [Step(name=n, text="" if n == "attribute_matching" else "fine, L4") for n in STEP_NAMES]
    parsed = parse_answer(render_answer(steps, "L4", "cot_first"), scheme)
    assert parsed.status == "partial" and "attribute_matching" in parsed.reason


def test_judgement_that_says_match_under_the_lowest_grade_is_inconsistent() -> None:
    scheme = BUILTIN_SCHEMES["crowdflower"]
    matches = [Step(name=n, text="The item matches.") for n in STEP_NAMES]
    assert not parse_answer(render_answer(matches, "L1", "cot_first"), scheme).consistent
    assert parse_answer(render_answer(matches, "L4", "cot_first"), scheme).consistent
    differs = [Step(name=n, text="The item does not match the query.") for n in STEP_NAMES]
    assert not parse_answer(render_answer(differs, "L4", "cot_first"), scheme).consistent
    assert parse_answer(render_answer(differs, "L1", "cot_first"), scheme).consistent
