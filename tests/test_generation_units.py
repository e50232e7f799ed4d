"""Generation pieces without a model: keys, plans, budgets, prompts, structured answers, limits, label probabilities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cotgen.backends.base import Job, Outcome, SamplingParams, TokenAlternatives
from cotgen.backends.limits import AdaptiveLimit, backoff_s, retry_after_s
from cotgen.generation import Budget, PairPrompt, StreamPlan, follower_id, plan_jobs, request_key
from cotgen.labelprobs import label_distribution
from cotgen.prompting import load_prompt, shipped_prompts
from cotgen.structured import answer_schema, parse_structured, validate
from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES
from schemas.pair import Pair
from schemas.rule import Rule

SCHEME = BUILTIN_SCHEMES["crowdflower"]


def _pair(i: int, **kw) -> Pair:
    return Pair(pair_id=f"p{i}", source="s", query=f"query {i}", title=f"title {i}", label="L3", scheme="crowdflower", **kw)


def _prompts(k: int) -> list[PairPrompt]:
    return [PairPrompt(pair=_pair(i), messages=({"role": "user", "content": f"q{i}"},)) for i in range(k)]


# ---------------------------------------------------------------------------- keys and plans
def test_request_key_depends_on_everything_that_shapes_the_request() -> None:
    msgs = [{"role": "user", "content": "red shoes"}]
    base = request_key("m", msgs, SamplingParams(), 0)
    assert base == request_key("m", list(msgs), SamplingParams(), 0)
    variants = [request_key("m2", msgs, SamplingParams(), 0), request_key("m", [{"role": "user", "content": "red shoe"}], SamplingParams(), 0),
                request_key("m", msgs, SamplingParams(temperature=0.3), 0), request_key("m", msgs, SamplingParams(seed=1), 0),
                request_key("m", msgs, SamplingParams(max_tokens=9), 0), request_key("m", msgs, SamplingParams(), 1)]
    assert len({base, *variants}) == 7


def test_plan_skips_done_keys_and_counts() -> None:
    plan = plan_jobs(_prompts(3), "m", 2, lambda p: SamplingParams())
    assert (plan.total, plan.done, len(plan.jobs)) == (6, 0, 3)
    keys = plan.keys()
    assert len(set(keys)) == 6
    plan.skip({keys[0], keys[1], keys[3]})
    assert plan.done == 3
    assert [j.pair_id for j in plan.jobs] == ["p1", "p2"]
    assert [i for i, _ in plan.jobs[0].samples] == [0]
    assert len(plan.jobs[1].samples) == 2


def test_identical_prompts_share_a_job_and_a_key_answered_for_another_pair_is_reused() -> None:
    same = ({"role": "user", "content": "same"},)
    prompts = [*_prompts(2), PairPrompt(pair=_pair(7), messages=same), PairPrompt(pair=_pair(8), messages=same)]
    plan = plan_jobs(prompts, "m", 2, lambda p: SamplingParams())
    assert (plan.total, [j.pair_id for j in plan.jobs]) == (8, ["p0", "p1", "p7"])
    shared = [k for _, k in plan.jobs[2].samples]
    assert [[(f.prompt.pair.pair_id, f.sample_index, f.sample_id) for f in plan.followers[k]] for k in shared] == \
        [[("p8", i, follower_id(k, "p8"))] for i, k in enumerate(shared)]
    # p7's first key was answered for another pair (an identical prompt in an earlier run): p7 and p8 reuse it.
    plan.skip({shared[0]: "p99", follower_id(shared[1], "p8"): "p8"})
    assert sorted((k == shared[0], f.prompt.pair.pair_id) for k, f, _ in plan.reuse) == [(True, "p7"), (True, "p8")]
    assert [k for _, k in plan.jobs[2].samples] == [shared[1]] and plan.followers == {}
    assert plan.done == 1, "only p8's own stored sample counts as done; the reused ones are still to store"
    stored = {"text": "Label: L3", "reasoning": "1. Query understanding: ...", "finish_reason": "stop",
              "logprobs": json.dumps([["Label", [["Label", -0.1]]]])}
    plan.answer_reuse({shared[0]: stored})
    assert [(o.key, o.shared_from, o.reasoning, o.logprobs[0].top) for o in plan.ready] == \
        [(follower_id(shared[0], p), shared[0], stored["reasoning"], (("Label", -0.1),)) for p in ("p7", "p8")]


def test_identical_prompts_in_a_later_chunk_all_get_the_answer_already_given() -> None:
    """Four identical pairs over two chunks: the second chunk's owner AND its follower reuse the answer."""
    same = ({"role": "user", "content": "same"},)
    first = plan_jobs([PairPrompt(pair=_pair(1), messages=same), PairPrompt(pair=_pair(2), messages=same)], "m", 1,
                      lambda p: SamplingParams())
    second = plan_jobs([PairPrompt(pair=_pair(3), messages=same), PairPrompt(pair=_pair(4), messages=same)], "m", 1,
                       lambda p: SamplingParams())
    delivered: list[Outcome] = []
    stream = StreamPlan(iter([first, second]))
    stream.bind(delivered.append)
    jobs = iter(stream.jobs)
    job = next(jobs)
    answer = Outcome(job=job, sample_index=0, key=job.samples[0][1], text="Label: L3", finish_reason="stop")
    prompt, followers = stream.route(answer)  # answered before the second chunk is planned
    assert [prompt.pair.pair_id, *(f.prompt.pair.pair_id for f in followers)] == ["p1", "p2"]
    assert list(jobs) == [], "no second request for the same prompt"
    assert sorted(o.job.pair_id for o in delivered) == ["p3", "p4"]
    assert all(o.shared_from == answer.key and o.text == "Label: L3" for o in delivered)
    for o in delivered:
        assert stream.route(o)[0].pair.pair_id == o.job.pair_id


def test_budget_truncates_the_last_job_and_says_why() -> None:
    jobs = [Job("p", (), SamplingParams(), ((0, "a"), (1, "b"))), Job("q", (), SamplingParams(), ((0, "c"), (1, "d")))]
    budget = Budget(max_requests=3)
    admitted = list(budget.admit(jobs))
    assert [len(j.samples) for j in admitted] == [2, 1]
    assert budget.exhausted is None  # nothing was left out
    budget = Budget(max_requests=1)
    assert [len(j.samples) for j in budget.admit(jobs)] == [1]
    assert budget.exhausted and "request budget" in budget.exhausted
    tokens = Budget(max_tokens=10)
    tokens.tokens = 10
    assert list(tokens.admit(jobs)) == [] and "token budget" in (tokens.exhausted or "")


# ---------------------------------------------------------------------------- prompts
def test_teacher_prompt_has_rules_grades_steps_and_gold() -> None:
    prompt = load_prompt("teacher")
    rules = [Rule(id="colour-match", title="Colour", text="The colour must match.")]
    pair = _pair(1, description="<b>x</b> " * 500, attributes={"color": "red"})
    system, user = prompt.render(pair, SCHEME, "label_first", rules=rules, gold="L3")
    for grade in SCHEME.grades:
        assert f"{grade.id} ({grade.name}): {grade.meaning}" in system["content"]
    for title in ("Query understanding", "Item understanding", "Category matching", "Attribute matching", "Relevance judgement"):
        assert title in system["content"]
    assert "first line" in system["content"]
    assert "[colour-match] Colour: The colour must match." in user["content"]
    assert "color: red" in user["content"]
    assert "why this pair is L3" in user["content"]
    assert len(user["content"]) < 1500, "long descriptions are truncated"
    _, plain = prompt.render(pair, SCHEME, "cot_first", rules=rules)
    assert "L3" not in plain["content"]


def test_policy_prompt_is_the_pair_alone() -> None:
    system, user = load_prompt("policy").render(_pair(2), SCHEME, "cot_first", rules=[Rule(id="r", title="t", text="x")], gold="L1")
    assert user["content"] == "Query: query 2\nItem title: title 2"
    assert "last line" in system["content"] and "L4 (Excellent)" in system["content"]


def test_prompts_are_versioned_and_hashed(tmp_path: Path) -> None:
    assert {"teacher", "policy"} <= set(shipped_prompts())
    assert load_prompt("teacher").name == f"teacher.v{shipped_prompts()['teacher'][-1]}"
    assert load_prompt("teacher", "v1").hash == load_prompt("teacher", "v1").hash
    custom = tmp_path / "mine.j2"
    custom.write_text("{% block system %}Grade it.{% endblock %}{% block user %}{{ pair.query }}{% endblock %}")
    mine = load_prompt("teacher", str(custom))
    assert mine.render(_pair(3), SCHEME, "cot_first")[1]["content"] == "query 3"
    assert mine.hash != load_prompt("teacher").hash
    custom.write_text("{% block system %}only a system block{% endblock %}")
    with pytest.raises(CotgenError, match="missing block"):
        load_prompt("teacher", str(custom))
    with pytest.raises(CotgenError, match="no teacher prompt 'v99'"):
        load_prompt("teacher", "v99")


# ---------------------------------------------------------------------------- structured answers
def test_structured_schema_and_validation() -> None:
    schema = answer_schema(SCHEME, "label_first")
    assert list(schema["properties"])[0] == "label"
    assert schema["properties"]["label"]["enum"] == SCHEME.ids
    good = {"label": "L2", "query_understanding": "a", "item_understanding": "b", "category_matching": "c",
            "attribute_matching": "d", "relevance_judgement": "a Mismatch, L2"}
    assert validate(good, SCHEME) == []
    parsed = parse_structured(json.dumps(good), SCHEME)
    assert (parsed.label, parsed.status, len(parsed.steps), parsed.consistent) == ("L2", "ok", 5, True)
    assert validate({**good, "label": "L9"}, SCHEME) == ["label 'L9' is not one of L4, L3, L2, L1"]
    contradicting = parse_structured(json.dumps({**good, "relevance_judgement": "clearly L4"}), SCHEME)
    assert not contradicting.consistent
    fallback = parse_structured("1. Query understanding: a\nLabel: L1", SCHEME)
    assert fallback.label == "L1" and "structured answer invalid" in fallback.reason


# ---------------------------------------------------------------------------- limits
def test_adaptive_limit_halves_on_overload_and_grows_back() -> None:
    limit = AdaptiveLimit(16)
    limit.on_overload(now=0.0, window_s=1.0)
    assert limit.limit == 8
    limit.on_overload(now=0.5, window_s=1.0)  # same burst: one signal
    assert limit.limit == 8
    limit.on_overload(now=2.0, window_s=1.0)
    assert limit.limit == 4
    for _ in range(200):
        limit.on_success()
    assert limit.limit == 16


def test_retry_after_and_backoff() -> None:
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({}) is None
    delays = [backoff_s(a, 0.5, 4.0) for a in range(8)]
    assert all(0.25 <= d <= 4.0 for d in delays) and delays[-1] >= 2.0
    assert backoff_s(0, 0.5, 4.0, server_wait_s=3.0) >= 3.0


# ---------------------------------------------------------------------------- label probabilities
def _alts(*pairs: tuple[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((t, math.log(p)) for t, p in pairs)


def test_label_distribution_at_the_deciding_token() -> None:
    positions = [TokenAlternatives("Label", ()), TokenAlternatives(":", ()),
                 TokenAlternatives(" L", _alts((" L", 0.95), (" The", 0.05))),
                 TokenAlternatives("3", _alts(("3", 0.6), ("4", 0.3), ("2", 0.05), ("x", 0.05))),
                 TokenAlternatives("\n", ())]
    dist = label_distribution(positions, SCHEME)
    assert dist is not None and sum(dist.values()) == pytest.approx(1.0)
    assert max(dist, key=dist.get) == "L3" and dist["L1"] == 0.0
    names = [TokenAlternatives("Label: ", ()), TokenAlternatives("Sub", _alts(("Sub", 0.5), ("Ex", 0.4), ("Irr", 0.1)))]
    esci = label_distribution(names, BUILTIN_SCHEMES["esci"])
    assert esci == pytest.approx({"E": 0.4, "S": 0.5, "C": 0.0, "I": 0.1})
    assert label_distribution([TokenAlternatives("no label here", ())], SCHEME) is None
    assert label_distribution(None, SCHEME) is None


@pytest.mark.slow
def test_label_distribution_from_real_logits(smollm2_path: str) -> None:
    """Teacher-forced SmolLM2 logits over "Label: L3": the distribution comes from the grade digit's position."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    lm = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    prompt = "Grades: L4, L3, L2, L1. Red shoes vs red sneakers.\n"
    answer = "Label: L3\n"
    ids = tok(prompt + answer, return_tensors="pt")["input_ids"]
    start = len(tok(prompt)["input_ids"])
    with torch.inference_mode():
        logprobs = torch.log_softmax(lm(ids).logits[0].float(), dim=-1)
    positions = []
    for pos in range(start, ids.shape[1]):
        values, indices = logprobs[pos - 1].topk(20)
        positions.append(TokenAlternatives(tok.decode([int(ids[0, pos])]),
                                           tuple((tok.decode([int(i)]), float(v)) for i, v in zip(indices, values, strict=True))))
    dist = label_distribution(positions, SCHEME)
    assert dist is not None
    assert set(dist) == set(SCHEME.ids) and sum(dist.values()) == pytest.approx(1.0)
    assert sum(1 for p in dist.values() if p > 0) >= 2, "the digit position spreads mass over several grades"


def test_vllm_backend_without_vllm_says_how_to_get_it() -> None:
    import importlib.util

    from cotgen.backends import create_backend
    from schemas.config import BackendConfig

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(CotgenError, match=r"pip install 'cotgen\[vllm\]'"):
        create_backend(BackendConfig(backend="vllm"))


def test_enum_trie_allows_only_continuations_of_an_allowed_value() -> None:
    from cotgen.backends.json_fields import _Trie

    end = 0
    trie = _Trie([[7, 4], [7, 3], [9]], end)
    assert sorted(trie.allowed([])) == [7, 9]
    assert sorted(trie.allowed([7])) == [3, 4], "after the shared 'L' only the digits that make a grade"
    assert trie.allowed([7, 4]) == [end] and trie.allowed([9]) == [end]
    assert trie.allowed([9, end, end]) == [end], "a finished row only pads"


def test_a_step_cut_by_its_budget_ends_at_its_last_full_sentence() -> None:
    from cotgen.backends.json_fields import _last_sentence

    assert _last_sentence("The query asks for earbuds. The item is a case for") == "The query asks for earbuds."
    assert _last_sentence("no sentence end at all") == "no sentence end at all"
