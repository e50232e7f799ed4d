"""Rewards with TRL's signature, on answers rendered by the shared answer format."""

from __future__ import annotations

import pytest
from datasets import Dataset

from schemas.answer import render_answer
from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES
from schemas.sample import Step
from training.data import attach_step_labels
from training.rewards import format_reward, label_position, label_reward, step_reward, token_f1

SCHEME = BUILTIN_SCHEMES["taosr4"]
STEPS = [
    Step(name="query_understanding", text="The user wants wireless earbuds."),
    Step(name="item_understanding", text="The item is a pair of Bluetooth earbuds with a charging case."),
    Step(name="category_matching", text="Both are earbuds, the category matches."),
    Step(name="attribute_matching", text="Wireless is stated and matches."),
    Step(name="relevance_judgement", text="Everything matches, Excellent."),
]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_label_reward_exact_adjacent_far_and_unparsable() -> None:
    completions = [render_answer(STEPS, g, "label_first") for g in ("L4", "L3", "L1")] + ["I am not sure."]
    gold = ["L4"] * 4
    assert label_reward(SCHEME)([], completions, label=gold) == [1.0, 0.0, 0.0, 0.0]
    assert label_reward(SCHEME, partial_credit=0.5)([], completions, label=gold) == [1.0, 0.5, 0.0, 0.0]


def test_rewards_read_conversational_completions_and_have_names() -> None:
    reward = label_reward(SCHEME)
    assert reward.__name__ == "label_correctness"
    assert reward([[]], [chat(render_answer(STEPS, "L2", "cot_first"))], label=["L2"]) == [1.0]


def test_label_reward_needs_the_label_column() -> None:
    with pytest.raises(CotgenError, match="no 'label' column"):
        label_reward(SCHEME)([], ["Label: L4"], pair_id=["x"])


def test_format_reward_checks_steps_label_and_order() -> None:
    label_first = render_answer(STEPS, "L4", "label_first")
    cot_first = render_answer(STEPS, "L4", "cot_first")
    only_label = "Label: L4"
    two_steps = "Label: L3\n1. Query understanding: earbuds\n2. Item understanding: a case"
    scores = format_reward(SCHEME, "label_first")([], [label_first, cot_first, only_label, two_steps, "no idea"])
    assert scores == pytest.approx([1.0, 2 / 3, 2 / 3, (2 / 5 + 2) / 3, 0.0])
    assert format_reward(SCHEME, "cot_first")([], [cot_first]) == [1.0]
    assert label_position(label_first, SCHEME) == "label_first"
    assert label_position(cot_first, SCHEME) == "cot_first"


def test_step_reward_follows_human_step_marks() -> None:
    good = "The user wants wireless earbuds."
    bad = "The user wants a phone case."
    refs = {"step_names": [["query_understanding", "query_understanding"]],
            "step_completions": [[good, bad]], "step_labels": [[True, False]]}
    near_good = "Label: L4\n1. Query understanding: The user wants wireless earbuds."
    near_bad = "Label: L4\n1. Query understanding: The user wants a phone case."
    missing = "Label: L4"
    reward = step_reward(SCHEME)
    scores = [reward([], [c], **refs)[0] for c in (near_good, near_bad, missing)]
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.0)
    assert scores[2] == 0.0
    no_refs = {"step_names": [[]], "step_completions": [[]], "step_labels": [[]]}
    assert reward([], [near_good], **no_refs) == [None]


def test_token_f1() -> None:
    assert token_f1("a b c", "a b c") == 1.0
    assert token_f1("a b", "c d") == 0.0
    assert token_f1("a b c d", "a b") == pytest.approx(2 / 3)


def test_attach_step_labels_joins_by_pair_and_names_steps() -> None:
    grpo = Dataset.from_dict({"prompt": [[], []], "label": ["L4", "L2"], "pair_id": ["p1", "p2"]})
    steps = Dataset.from_dict({"pair_id": ["p1"], "prompt": [[]],
                               "completions": [["1. Query understanding: earbuds", "a plain second step"]],
                               "labels": [[True, False]]})
    joined = attach_step_labels(grpo, steps, SCHEME)
    assert joined["step_names"] == [["query_understanding", "item_understanding"], []]
    assert joined["step_labels"] == [[True, False], []]
    assert joined["step_completions"][0][1] == "a plain second step"
