"""The step judge on real CrowdFlower pairs and real stores: parsing, prompts, keyed resumable runs against a
loopback judge with fixed verdicts, hybrid label precedence, kappa against scikit-learn, the steps export."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers_curation import (
    SCHEME,
    add_review,
    add_run,
    add_samples,
    answer_text,
    copy_workspace,
    ingest_crowdflower,
    pairs_of_queries,
    plain_prompt,
    sample_id,
    synth_run,
    with_curation,
    wrong_label,
)
from helpers_generation import configure
from helpers_judge import JudgeRules, judge_server, judged_count
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from cotgen.app.judge import JudgeOptions, judge_agreement, plan_judgements, run_judge
from cotgen.cli import app
from cotgen.generation import Budget
from cotgen.judge import load_judge_prompt, parse_verdicts, render_messages, verdict_schema
from curation.export import export_dataset
from curation.judge import (
    JudgementRow,
    JudgeRun,
    VerdictRow,
    cohen_kappa,
    judge_candidates,
    open_judge_run,
    save_judgements,
)
from curation.review.journal import utc_now
from curation.review.queue import ClaimContext, claim, parse_queue
from curation.store import open_store
from schemas.config import JudgeConfig, ReviewConfig
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.sample import STEP_NAMES, Step
from schemas.workspace import Workspace

from conftest import COTGEN, run_cli

T0 = datetime(2025, 1, 1, 12, 0, 0)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("judge") / "ws"
    ingest_crowdflower(root, shared_data)
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Workspace:
    return copy_workspace(base, tmp_path / "ws")


def teacher_store(ws: Workspace, n_queries: int = 6) -> list[dict]:
    """A teacher run (one CoT per pair, a seeded fifth of them with a wrong label); returns its samples."""
    with open_store(ws) as store:
        synth_run(store, pairs_of_queries(store, n_queries), "teacher-1", "teacher", 1, "cot_first")
        return store.query("SELECT s.sample_id, s.predicted_label, g.label AS gold FROM samples s "
                           "JOIN gold_pairs g USING (pair_id) ORDER BY s.sample_id")


def loopback(ws: Workspace, url: str, **extra: object) -> JudgeConfig:
    return JudgeConfig.model_validate({**ws.config.judge.model_dump(), "backend": "openai", "model": "fixed-judge",
                                       "base_urls": [url], "max_retries": 0, **extra})


# ---------------------------------------------------------------------------- library
def test_parse_verdicts_reads_every_shape_and_says_how_it_went() -> None:
    names = list(STEP_NAMES)
    flat = {f"{n}_reason": f"why {n}" for n in names} | {n: "correct" for n in names} | {"category_matching": "incorrect"}
    j = parse_verdicts(json.dumps(flat), names)
    assert (j.status, j.verdicts, j.first_wrong) == ("ok", [True, True, False, True, True], 2)
    assert j.steps[2].reason == "why category_matching"
    listed = parse_verdicts('```json\n{"steps": [{"step": 1, "verdict": "correct", "reason": "fine"}, '
                            '{"verdict": false, "reason": "the item is blue"}]}\n```', names)
    assert (listed.status, listed.verdicts[:3], listed.steps[1].reason) == ("partial", [True, False, None], "the item is blue")
    nested = parse_verdicts(json.dumps({"Query understanding": {"verdict": "Incorrect", "why": "misread"}}), names)
    assert nested.verdicts[0] is False and nested.steps[0].reason == "misread" and nested.status == "partial"
    text = parse_verdicts("1. correct: the shopper wants shoes\n**Step 2** - wrong, the item is a sock\n"
                          "Category matching: not correct, other aisle\n4. no brand stated, correct\n"
                          "5. Relevance judgement: incorrect", names)
    assert (text.status, text.verdicts, text.first_wrong) == ("ok", [True, False, False, True, False], 1)
    assert text.steps[1].reason == "the item is a sock"
    cut = parse_verdicts('{"query_understanding_reason": "fine", "query_understanding": "correct", "item_und', names)
    assert (cut.status, cut.verdicts[:2]) == ("partial", [True, None])  # an answer cut at max_tokens keeps its verdicts
    assert parse_verdicts("I cannot judge this.", names).status == "failed"
    assert parse_verdicts("  ", names).status == "empty"
    assert parse_verdicts(json.dumps({n: "correct" for n in names}), names).first_wrong is None


def test_judge_prompt_shows_pair_rules_gold_steps_and_keys() -> None:
    prompt = load_judge_prompt()
    text = (Path(__file__).resolve().parents[1] / "cotgen" / "prompts" / "judge.v1.j2").read_text(encoding="utf-8")
    assert prompt.name == "judge.v1" and prompt.hash == hashlib.sha256(text.encode()).hexdigest()
    pair = Pair(pair_id="p", source="s", query="red running shoes", title="Blue trail shoe", label="L2", scheme="crowdflower",
                attributes={"color": "blue"})
    steps = [Step(name=n, text=f"step {n}\nsecond line") for n in STEP_NAMES]
    rule = Rule(id="color-mismatch", title="Colour", text="A stated colour that differs lowers the grade.")
    system, user = render_messages(prompt, pair, SCHEME, steps, rules=[rule], gold="L2", predicted="L4")
    assert all(g.meaning in system["content"] for g in SCHEME.grades)
    assert "relevance_judgement_reason, relevance_judgement" in system["content"]
    for needle in ("Query: red running shoes", "color: blue", "[color-mismatch] Colour:", "correct grade for this pair is L2",
                   "(it concluded L4)", "3. Category matching: step category_matching second line"):
        assert needle in user["content"]
    hidden = render_messages(prompt, pair, SCHEME, steps, structured=False)[1]["content"]
    assert "correct grade" not in hidden and "concluded" not in hidden
    schema = verdict_schema(["query_understanding", "other", "other"])
    assert list(schema["properties"]) == ["query_understanding_reason", "query_understanding", "other_reason", "other",
                                          "other_2_reason", "other_2"]


# ---------------------------------------------------------------------------- runs
def test_judge_run_is_keyed_resumable_and_summarised(ws: Workspace) -> None:
    samples = teacher_store(ws)
    wrong = {s["sample_id"] for s in samples if s["predicted_label"] != s["gold"]}
    assert 0 < len(wrong) < len(samples)
    with judge_server() as (url, rules):
        first = run_judge(ws, JudgeOptions(config=loopback(ws, url), limit=5))
        assert (first.judged, first.already_done, first.status, rules.requests) == (5, 0, "done", 5)
        full = run_judge(ws, JudgeOptions(config=loopback(ws, url)))
        assert (full.judged, full.already_done, full.planned) == (len(samples) - 5, 5, len(samples))
        again = run_judge(ws, JudgeOptions(config=loopback(ws, url)))
        assert (again.judged, again.already_done, rules.requests) == (0, len(samples), len(samples))
    assert first.run == full.run == again.run and again.store["judgements"] == len(samples) and again.gold_shown
    assert again.store["parse_rate"] == 1.0 and again.store["status"] == {"ok": len(samples)}
    share = {r["step_name"]: r["wrong_share"] for r in again.store["steps"]}
    expected = len(wrong) / len(samples)
    assert share == pytest.approx({n: expected if n in ("category_matching", "relevance_judgement") else 0.0
                                   for n in STEP_NAMES})
    with open_store(ws, read_only=True) as store:
        rows = store.query("SELECT sample_id, first_wrong, prompt_hash, model FROM judgements")
        verdicts = store.rows("SELECT count(*), count(DISTINCT (sample_id, step_index)) FROM step_verdicts")[0]
    assert len({r["sample_id"] for r in rows}) == len(samples) and verdicts == (5 * len(samples),) * 2
    assert {r["sample_id"]: r["first_wrong"] for r in rows} == {s["sample_id"]: 2 if s["sample_id"] in wrong else None
                                                                for s in samples}
    assert {(r["prompt_hash"], r["model"]) for r in rows} == {(load_judge_prompt().hash, "fixed-judge")}


def test_free_text_judge_and_other_settings_are_another_run(ws: Workspace) -> None:
    samples = teacher_store(ws, 3)
    with judge_server(JudgeRules(always_wrong=("query_understanding",))) as (url, _):
        structured = run_judge(ws, JudgeOptions(config=loopback(ws, url)))
        text = run_judge(ws, JudgeOptions(config=loopback(ws, url, structured=False)))
    assert structured.run != text.run and text.judged == len(samples)
    assert text.store["status"] == {"ok": len(samples)}
    assert {r["step_name"]: r["wrong_share"] for r in text.store["steps"]}["query_understanding"] == 1.0


def test_cli_judge_and_stats(ws: Workspace) -> None:
    teacher_store(ws, 3)
    runner = CliRunner()
    with judge_server() as (url, _):
        out = runner.invoke(app, ["judge", "-w", str(ws.root), "--backend", "openai", "--model", "fixed-judge",
                                  "--base-url", url, "--run", "teacher-1", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["judged"] > 0
    unknown = runner.invoke(app, ["judge", "-w", str(ws.root), "--run", "nope"])
    assert unknown.exit_code != 0 and "no generation run named nope" in str(unknown.exception)
    stats = runner.invoke(app, ["judge", "stats", "-w", str(ws.root), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["overall"]["n"] == 0  # no human marks yet


# ---------------------------------------------------------------------------- hybrid labels, stats, export
def _judge(store, name: str, minutes: int, verdicts: dict[str, list[bool | None]]) -> None:
    """Store a judge run's verdicts directly (as the run would): {sample_id: verdict per step}."""
    run = open_judge_run(store, JudgeRun(judge_run_id=f"jr-{name}", name=name, samples_role="teacher",
                                         backend="openai", model="m", prompt_name="judge.v1", prompt_hash="h",
                                         started_at=T0 + timedelta(minutes=minutes), params={"identity": {}}))
    rows = []
    for sid, flags in verdicts.items():
        steps = [VerdictRow(i, STEP_NAMES[i], ok, "r") for i, ok in enumerate(flags)]
        first = next((v.step_index for v in steps if v.correct is False), None)
        rows.append(JudgementRow(judge_key=f"{name}:{sid}", judge_run_id=run.judge_run_id, sample_id=sid, pair_id="p",
                                 model="m", prompt_hash="h", text="{}", status="ok", note="", first_wrong=first,
                                 verdicts=steps))
    save_judgements(store, rows)


def test_hybrid_label_precedence(ws: Workspace) -> None:
    with open_store(ws) as store:
        a, b, c = pairs_of_queries(store, 3)[:3]
        run = add_run(store, "teacher-1", "teacher")
        add_samples(store, run, [(p.pair_id, 0, answer_text(p, p.label, "cot_first")) for p in (a, b, c)])
        sa, sb, sc = (sample_id(run, p.pair_id, 0) for p in (a, b, c))
        _judge(store, "old", 0, {sa: [False, False, True, True, True], sb: [True] * 5})
        _judge(store, "new", 5, {sa: [True, None, True, True, False], sb: [True, True, True, False, True],
                                 sc: [True, True, None, True, True]})
        add_review(store, "step", a.pair_id, sample_id=sa, step_index=0, step_correct=False)
        add_review(store, "accept", b.pair_id, sample_id=sb)
        hybrid = {(r[0], r[1]): (r[2], r[3]) for r in
                  store.rows("SELECT sample_id, step_index, correct, source FROM hybrid_step_labels")}
    assert hybrid[(sa, 0)] == (False, "human")  # the mark beats the newer judge run's "correct"
    assert hybrid[(sa, 1)] == (False, "judge")  # the newer run gave no verdict: the older one's stands
    assert hybrid[(sa, 4)] == (False, "judge")  # the newer run wins where both gave one
    assert hybrid[(sb, 3)] == (False, "judge") and (sc, 2) not in hybrid
    result = export_dataset(ws, "steps", ["steps"], "label_first", plain_prompt)
    rows = {r["sample_id"]: r for r in pq.read_table(result.path / "data" / "steps").to_pylist()}
    assert rows[sa]["labels"] == [False, False, True, True, False]
    assert rows[sa]["label_sources"] == ["human", "judge", "judge", "judge", "judge"]
    assert rows[sb]["labels"] == [True] * 5 and rows[sb]["label_sources"] == ["human"] * 5  # accepted: humans vouch
    assert sc not in rows  # a step with no label keeps the sample out
    dropped = pq.read_table(result.path / "dropped.parquet").to_pylist()
    assert {(r["sample_id"], r["reason"]) for r in dropped if r["kind"] == "steps"} == {(sc, "steps_unlabelled")}


def test_judge_stats_kappa_matches_scikit_learn(ws: Workspace) -> None:
    rng = np.random.default_rng(7)
    human: dict[str, list[bool]] = {}
    judge: dict[str, list[bool]] = {}
    with open_store(ws) as store:
        pairs = pairs_of_queries(store, 12)
        run = add_run(store, "teacher-1", "teacher")
        add_samples(store, run, [(p.pair_id, 0, answer_text(p, wrong_label(p.label, 1), "cot_first")) for p in pairs])
        for p in pairs:
            sid = sample_id(run, p.pair_id, 0)
            human[sid] = [bool(v) for v in rng.random(5) < 0.6]
            # the judge agrees with the human 75 % of the time
            judge[sid] = [h if rng.random() < 0.75 else not h for h in human[sid]]
            for i, ok in enumerate(human[sid]):
                add_review(store, "step", p.pair_id, sample_id=sid, step_index=i, step_correct=ok)
        _judge(store, "j", 0, judge)
    stats = judge_agreement(ws)
    for i, name in enumerate(STEP_NAMES):
        row = next(r for r in stats.steps if r["step"] == name)
        h = [human[s][i] for s in human]
        j = [judge[s][i] for s in human]
        assert row["n"] == len(pairs)
        assert row["accuracy"] == pytest.approx(np.mean(np.array(h) == np.array(j)))
        assert row["kappa"] == pytest.approx(cohen_kappa_score(h, j))
        assert row["confusion"]["human_wrong_judge_correct"] == sum(not a and b for a, b in zip(h, j, strict=True))
    everything_h = [v for s in human for v in human[s]]
    everything_j = [v for s in human for v in judge[s]]
    assert stats.overall["kappa"] == pytest.approx(cohen_kappa_score(everything_h, everything_j))
    assert cohen_kappa(3, 0, 0, 0) is None and cohen_kappa(0, 0, 0, 0) is None  # undefined: no chance to disagree
    assert stats.labels["samples"] == len(pairs) and stats.labels["right_label"] == 0


def test_steps_export_from_judge_verdicts_alone(ws: Workspace) -> None:
    samples = teacher_store(ws)
    with judge_server() as (url, _):
        run_judge(ws, JudgeOptions(config=loopback(ws, url)))
    result = export_dataset(ws, "steps", ["steps"], "label_first", plain_prompt)
    rows = pq.read_table(result.path / "data" / "steps").to_pylist()
    assert len(rows) == len(samples)
    for row in rows:
        s = next(s for s in samples if s["sample_id"] == row["sample_id"])
        label_wrong = s["predicted_label"] != s["gold"]
        assert row["label_sources"] == ["judge"] * 5
        assert row["labels"] == [True, True, not label_wrong, True, not label_wrong]
        assert row["completions"][0].startswith("1. Query understanding: ")


def test_sft_can_keep_out_right_answers_with_wrong_steps(ws: Workspace) -> None:
    with open_store(ws) as store:
        a, b, c = pairs_of_queries(store, 3)[:3]
        run = add_run(store, "teacher-1", "teacher")
        add_samples(store, run, [(p.pair_id, 0, answer_text(p, p.label, "cot_first")) for p in (a, b, c)])
        sa, sb, sc = (sample_id(run, p.pair_id, 0) for p in (a, b, c))
        _judge(store, "j", 0, {sa: [True, True, False, True, True], sb: [True, False, True, True, True], sc: [True] * 5})
        add_review(store, "accept", b.pair_id, sample_id=sb)  # a reviewer accepted it: the judge does not overrule
    kept = export_dataset(ws, "plain", ["sft"], "label_first", plain_prompt)
    assert {r["sample_id"] for r in pq.read_table(kept.path / "data" / "sft").to_pylist()} == {sa, sb, sc}
    strict = export_dataset(with_curation(ws, sft_drop_wrong_steps=True), "strict", ["sft"], "label_first", plain_prompt)
    assert {r["sample_id"] for r in pq.read_table(strict.path / "data" / "sft").to_pylist()} == {sb, sc}
    dropped = pq.read_table(strict.path / "dropped.parquet").to_pylist()
    assert [(r["sample_id"], r["reason"]) for r in dropped if r["kind"] == "sft"] == [(sa, "wrong_steps")]


def test_review_queue_judge_disagreements(ws: Workspace) -> None:
    with open_store(ws) as store:
        pairs = pairs_of_queries(store, 3)[:5]
        run = add_run(store, "teacher-1", "teacher")
        right = [(p.pair_id, 0, answer_text(p, p.label, "cot_first")) for p in pairs[:3]]
        wrong = [(p.pair_id, 0, answer_text(p, wrong_label(p.label, 1), "cot_first")) for p in pairs[3:]]
        add_samples(store, run, right + wrong)
        s = [sample_id(run, p.pair_id, 0) for p in pairs]
        ok, bad = [True] * 5, [True, True, False, True, True]
        # s0: the judge agrees with the label; s1: right label, a step judged wrong; s2: judged right but a
        # reviewer marked that step wrong; s3: wrong label, every step judged right; s4: wrong label, judged wrong.
        _judge(store, "j", 0, {s[0]: ok, s[1]: bad, s[2]: ok, s[3]: ok, s[4]: bad})
        add_review(store, "step", pairs[2].pair_id, sample_id=s[2], step_index=1, step_correct=False)
        ctx = ClaimContext(annotator="ann", spec=parse_queue("judge-disagreements"), seed=0, gamma=0.5,
                           config=ReviewConfig(overlap=0.0, gold_fraction=0.0))
        claimed = claim(store, ctx, 100, utc_now())
    assert claimed == [s[2], s[1], s[3]]  # against a human first, then right label/wrong step, then the reverse


def test_pipeline_stage_judge(ws: Workspace) -> None:
    samples = teacher_store(ws, 3)
    with judge_server() as (url, _):
        configure(ws.root, "judge", backend="openai", model="fixed-judge", base_urls=[url])
        out = CliRunner().invoke(app, ["run", "-w", str(ws.root), "--stage", "judge", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)["judge"]
    assert result["judged"] == len(samples) and result["steps_judged"] == 5 * len(samples)


def test_budget_and_sigterm_stop_a_run_that_the_same_command_continues(ws: Workspace) -> None:
    samples = teacher_store(ws, 6)
    assert len(samples) >= 8  # room to stop in the middle: answers come one at a time, half a second each
    with judge_server() as (url, rules):
        capped = run_judge(ws, JudgeOptions(config=loopback(ws, url, concurrency=1), budget=Budget(max_requests=2)))
        assert (capped.judged, capped.status) == (2, "stopped") and "request budget" in capped.stop_reason
        configure(ws.root, "judge", backend="openai", model="fixed-judge", base_urls=[url], concurrency=1)
        rules.latency_s = 0.5
        proc = subprocess.Popen([*COTGEN, "judge", "-w", str(ws.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 120
        while judged_count(ws) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "run the same command again" in err
        with open_store(ws, read_only=True) as store:
            assert store.scalar("SELECT status FROM judge_runs WHERE name = ?", [capped.run]) == "stopped"
        kept = judged_count(ws)
        rules.latency_s = 0.0
        summary = json.loads(run_cli("judge", "-w", str(ws.root), "--json").stdout)
    # Answers that arrived after the stop are journaled, not lost: the re-run stores them without asking again.
    assert summary["already_done"] == kept and summary["judged"] == len(samples) - kept
    assert rules.requests == len(samples), "no CoT judged twice"
    assert summary["status"] == "done" and summary["store"]["judgements"] == len(samples)


def test_a_killed_judge_run_pays_again_only_for_the_requests_in_flight(ws: Workspace) -> None:
    samples = teacher_store(ws, 12)
    with judge_server() as (url, rules):
        configure(ws.root, "judge", backend="openai", model="fixed-judge", base_urls=[url], concurrency=2)
        rules.latency_s = 0.1
        for kill in (3, 8):  # SIGKILL: no handler runs, the batch the writer holds in memory dies with the process
            proc = subprocess.Popen([*COTGEN, "judge", "-w", str(ws.root), "--json"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while rules.requests < kill and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            proc.kill()
            proc.wait()
        rules.latency_s = 0.0
        summary = json.loads(run_cli("judge", "-w", str(ws.root), "--json").stdout)
    assert summary["status"] == "done" and summary["store"]["judgements"] == len(samples)
    assert rules.requests - len(samples) <= 2 * 2, "sent twice: at most the 2 requests in flight at each kill"
    assert not list((ws.root / "journal").glob("judge-*.jsonl")), "the journal goes once the store has it all"


def test_policy_cots_are_judged_with_the_rules_a_teacher_prompt_got(ws: Workspace) -> None:
    with open_store(ws) as store:
        a, b = pairs_of_queries(store, 2)[:2]
        teacher = add_run(store, "teacher-1", "teacher")
        policy = add_run(store, "policy-1", "policy", started=5)
        add_samples(store, teacher, [(a.pair_id, 0, answer_text(a, a.label, "cot_first"))])
        add_samples(store, policy, [(p.pair_id, i, answer_text(p, p.label, "label_first", i)) for p in (a, b) for i in (0, 1)])
        store.con.execute("UPDATE samples SET rule_ids = ['color-mismatch'] WHERE run_id = ?", [teacher])
        candidates = judge_candidates(store, "policy", [])
    assert {c.sample_id for c in candidates} == {sample_id(policy, p.pair_id, i) for p in (a, b) for i in (0, 1)}
    assert {c.pair.pair_id: c.rule_ids for c in candidates} == {a.pair_id: ["color-mismatch"], b.pair_id: []}
    rule = Rule(id="color-mismatch", title="Colour", text="A stated colour that differs lowers the grade.")
    plan, _ = plan_judgements(ws, ws.config.judge, load_judge_prompt(), candidates, {rule.id: rule})
    users = {job.pair_id: job.messages[1]["content"] for job in plan.jobs}
    for c in candidates:
        assert ("[color-mismatch] Colour:" in users[c.sample_id]) == (c.pair.pair_id == a.pair_id)
    assert len({key for job in plan.jobs for _, key in job.samples}) == len(candidates)  # one key per CoT
