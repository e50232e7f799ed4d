"""pass@k, majority vote, parse rate, confusion and difficulty on a real store of CrowdFlower pairs."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers_curation import (
    PairRow,
    add_review,
    add_run,
    add_samples,
    answer_text,
    build_store,
    copy_workspace,
    ingest_crowdflower,
    pairs_of_queries,
    plain_prompt,
    steps_for,
    wrong_label,
)

from curation.difficulty import load_current_counts, store_difficulty
from curation.export import export_dataset
from curation.stats import compute_pair_counts, install_macros, pair_stats, resolve_runs, run_stats
from curation.store import open_store
from schemas.answer import render_answer
from schemas.config import DifficultyBins
from schemas.sample import STEP_NAMES, Step


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("curation-stats") / "ws"
    build_store(ingest_crowdflower(root, shared_data), n_queries=20)
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path):
    return copy_workspace(base, tmp_path / "ws")


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c of them right) that hold at least one right sample."""
    right = set(range(c))
    subsets = list(combinations(range(n), k))
    return sum(1 for s in subsets if right & set(s)) / len(subsets)


def test_pass_at_k_matches_enumeration(ws) -> None:
    with open_store(ws, read_only=True) as store:
        install_macros(store)
        cases = [(n, c, k) for n in range(1, 10) for c in range(n + 1) for k in range(1, n + 1)]
        got = {case: store.scalar("SELECT pass_at_k(?, ?, ?)", list(case)) for case in cases}
        assert store.scalar("SELECT pass_at_k(3, 1, 4)") is None  # k > n: undefined
    for (n, c, k), value in got.items():
        assert value == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-9), (n, c, k)


def test_run_stats_per_run_and_per_pair(ws) -> None:
    with open_store(ws, read_only=True) as store:
        runs = resolve_runs(store)
        stats = {s.name: s for s in run_stats(store, runs)}
        per_pair = pair_stats(store, next(r for r in runs if r.name == "policy-1"))
        truth = store.query(
            "SELECT s.pair_id, count(*) AS n, count(*) FILTER (WHERE s.predicted_label = p.label) AS c, "
            "list(s.predicted_label) AS labels FROM samples s JOIN pairs p USING (pair_id) "
            "WHERE s.run_id = 'run-policy-1' GROUP BY s.pair_id ORDER BY s.pair_id")
    policy = stats["policy-1"]
    assert [r["pair_id"] for r in per_pair] == [t["pair_id"] for t in truth]
    for row, t in zip(per_pair, truth, strict=True):
        assert (row["n"], row["c"]) == (t["n"], t["c"])
        assert row["pass_at_k"] == pytest.approx([brute_pass_at_k(t["n"], t["c"], k) for k in range(1, t["n"] + 1)])
        top = max(t["labels"].count(x) for x in set(t["labels"]))
        assert row["majority"] == min(x for x in set(t["labels"]) if t["labels"].count(x) == top)
    for k in range(1, 5):
        expected = sum(brute_pass_at_k(t["n"], t["c"], k) for t in truth) / len(truth)
        assert policy.pass_at_k[k] == pytest.approx(expected)
    assert policy.pass_at_k[1] == pytest.approx(policy.accuracy)  # unbiased pass@1 is the sample accuracy
    assert all(policy.pass_at_k[k] <= policy.pass_at_k[k + 1] for k in range(1, 4))
    assert policy.majority_accuracy == pytest.approx(sum(r["majority_correct"] for r in per_pair) / len(per_pair))
    assert sum(sum(row.values()) for row in policy.confusion.values()) == policy.samples
    assert sum(policy.confusion[g].get(g, 0) for g in policy.confusion) == sum(t["c"] for t in truth)
    assert {x.label for x in policy.labels} == set(policy.confusion)
    assert stats["teacher-1"].n_max == 2 and policy.n_max == 4


def test_parse_rate_counts_unparsed_answers_as_wrong(ws) -> None:
    with open_store(ws) as store:
        pair_id, gold, query, title = store.one("SELECT pair_id, label, query, title FROM pairs ORDER BY pair_id LIMIT 1")
        run_id = add_run(store, "policy-2", "policy", started=20)
        pair = PairRow(pair_id, "", query, title, gold)
        add_samples(store, run_id, [(pair_id, 0, answer_text(pair, gold, "label_first")),
                                    (pair_id, 1, "I cannot decide."), (pair_id, 2, "")])
        stats = run_stats(store, resolve_runs(store, ["policy-2"]))[0]
    assert stats.parse_rate == pytest.approx(1 / 3)
    assert stats.accuracy == pytest.approx(1 / 3)
    assert stats.confusion[gold] == {gold: 1, "(unparsed)": 2}
    assert stats.pass_at_k[1] == pytest.approx(1 / 3) and stats.pass_at_k[3] == 1.0


def test_relabel_changes_correctness(ws) -> None:
    """Correctness is recomputed against the gold label after reviews, never read from samples.correct."""
    with open_store(ws) as store:
        runs = resolve_runs(store, ["policy-1"])
        before = run_stats(store, runs)[0]
        pair_id, gold, wrong = store.one(
            "SELECT s.pair_id, p.label, s.predicted_label FROM samples s JOIN pairs p USING (pair_id) "
            "WHERE s.run_id = 'run-policy-1' AND s.predicted_label <> p.label ORDER BY s.sample_id LIMIT 1")
        c_old, c_new = store.one(
            "SELECT count(*) FILTER (WHERE predicted_label = ?), count(*) FILTER (WHERE predicted_label = ?) "
            "FROM samples WHERE run_id = 'run-policy-1' AND pair_id = ?", [gold, wrong, pair_id])
        store.con.execute("UPDATE samples SET correct = true")  # a stale column must not matter
        add_review(store, "relabel", pair_id, new_label=wrong)
        after = run_stats(store, runs)[0]
    assert after.samples == before.samples
    assert round((after.accuracy - before.accuracy) * after.samples) == c_new - c_old


def test_difficulty_bins_stored_per_run(ws) -> None:
    bins = DifficultyBins(gamma=0.5)
    with open_store(ws) as store:
        runs = resolve_runs(store, role="policy")
        summary = store_difficulty(store, runs, bins)
        again = store_difficulty(store, runs, bins)  # recomputing replaces, never duplicates
        rows = store.query("SELECT pair_id, n, c, difficulty, gamma FROM pair_difficulty WHERE run_id = 'run-policy-1'")
    assert summary == again
    assert sum(summary["policy-1"].values()) == len(rows)
    for r in rows:
        c, n = r["c"], r["n"]
        expected = "unsolved" if c == 0 else "easy" if c == n else "hard" if c <= 0.5 * n else "medium"
        assert r["difficulty"] == expected and r["gamma"] == 0.5
    assert {r["difficulty"] for r in rows} == {"easy", "medium", "hard", "unsolved"}


def test_stored_difficulty_reused_only_while_current(ws) -> None:
    """An export reuses stored difficulty only while the run's samples, the reviews and the bins are unchanged."""
    bins = DifficultyBins(gamma=0.5)
    with open_store(ws) as store:
        policy = resolve_runs(store, ["policy-1"])[0]
        assert not load_current_counts(store, policy.run_id, bins)  # nothing stored yet
        store_difficulty(store, [policy], bins)
        assert load_current_counts(store, policy.run_id, bins)
        stored = store.rows("SELECT pair_id, n, c FROM pair_counts ORDER BY pair_id")
        compute_pair_counts(store, [policy.run_id])
        assert store.rows("SELECT pair_id, n, c FROM pair_counts ORDER BY pair_id") == stored
        assert not load_current_counts(store, policy.run_id, DifficultyBins(gamma=0.25))
        pair_id = stored[0][0]
        add_review(store, "relabel", pair_id, new_label="L1")
        assert not load_current_counts(store, policy.run_id, bins)


def test_cli_stats_and_difficulty(ws, cli) -> None:
    out = json.loads(cli("curate", "stats", "-w", str(ws.root), "--json").stdout)
    assert [r["name"] for r in out] == ["teacher-1", "policy-1"]
    assert set(out[1]["pass_at_k"]) == {"1", "2", "3", "4"}
    pairs_file = ws.root / "pairs.parquet"
    table = cli("curate", "stats", "-w", str(ws.root), "--run", "policy-1", "--pairs", str(pairs_file)).stdout
    assert "pass@4" in table and "confusion" in table
    assert pq.read_table(pairs_file).num_rows == out[1]["pairs"]
    bad = cli("curate", "difficulty", "-w", str(ws.root), "--run", "nope", check=False)
    assert bad.returncode == 2 and "run 'nope': no such run" in bad.stderr


def test_majority_vote_counts_unparsed_answers_as_wrong(ws) -> None:
    """1 right + 3 unparsed is no majority win; 2 right + 1 unparsed + 1 wrong is; a tie with unparsed is not."""
    with open_store(ws) as store:
        a, b, c = pairs_of_queries(store, 1)[:3]
        run_id = add_run(store, "policy-3", "policy", started=30)
        unparsed = "I cannot decide."
        add_samples(store, run_id, [
            (a.pair_id, 0, answer_text(a, a.label, "label_first")), *((a.pair_id, i, unparsed) for i in (1, 2, 3)),
            (b.pair_id, 0, answer_text(b, b.label, "label_first")), (b.pair_id, 1, answer_text(b, b.label, "label_first", 1)),
            (b.pair_id, 2, unparsed), (b.pair_id, 3, answer_text(b, wrong_label(b.label, 0), "label_first")),
            (c.pair_id, 0, answer_text(c, c.label, "label_first")), (c.pair_id, 1, answer_text(c, c.label, "label_first", 1)),
            (c.pair_id, 2, unparsed), (c.pair_id, 3, unparsed),
        ])
        run = resolve_runs(store, ["policy-3"])
        stats = run_stats(store, run)[0]
        per_pair = {r["pair_id"]: r for r in pair_stats(store, run[0])}
    assert per_pair[a.pair_id]["majority"] is None and not per_pair[a.pair_id]["majority_correct"]
    assert per_pair[b.pair_id]["majority"] == b.label and per_pair[b.pair_id]["majority_correct"]
    assert per_pair[c.pair_id]["majority"] is None  # a tie with the unparsed answers is no majority
    assert stats.majority_accuracy == pytest.approx(1 / 3)
    assert stats.pass_at_k[1] == pytest.approx(5 / 12)  # pass@k as before: right answers over samples
    assert stats.pass_at_k[4] == 1.0


def test_gold_shown_run_reports_label_compliance_and_intrinsic_quality(ws, cli) -> None:
    with open_store(ws) as store:
        pairs = pairs_of_queries(store, 2)[:4]
        run_id = add_run(store, "teacher-gold", "teacher", started=40, params={"explain_gold": True})
        steps = steps_for(pairs[3], pairs[3].label)
        steps[1] = Step(name="item_understanding", text="It is soft and it is soft and it is soft and it is soft.")
        add_samples(store, run_id, [(p.pair_id, 0, answer_text(p, p.label, "cot_first")) for p in pairs[:2]]
                    + [(pairs[3].pair_id, 0, render_answer(steps, pairs[3].label, "cot_first"))])
        cut = answer_text(pairs[2], pairs[2].label, "cot_first")
        add_samples(store, run_id, [(pairs[2].pair_id, 0, cut[:cut.index("3.")])], finish_reason="length")
        judged = store.scalar("SELECT sample_id FROM samples WHERE run_id = ? ORDER BY sample_id LIMIT 1", [run_id])
        with store.transaction() as con:  # the step judge graded one answer: step 3 of 5 wrong
            con.execute("INSERT INTO judge_runs (judge_run_id, name, samples_role, backend, model, prompt_name, "
                        "prompt_hash, status, started_at) VALUES ('j1', 'judge-1', 'teacher', 'openai', 'judge', "
                        "'judge.v1', 'h', 'done', TIMESTAMP '2025-01-02 00:00:00')")
            for i, name in enumerate(STEP_NAMES):
                con.execute("INSERT INTO step_verdicts (judge_run_id, sample_id, step_index, step_name, correct, model, "
                            "prompt_hash, judge_key) VALUES ('j1', ?, ?, ?, ?, 'judge', 'h', 'k')", [judged, i, name, i != 2])
        (stats,) = run_stats(store, resolve_runs(store, ["teacher-gold"]), gates=ws.config.curation)
    assert stats.gold_shown and stats.agreement_name == "label compliance"
    q = stats.quality
    assert q is not None and q.samples == 4
    assert (q.truncation_rate, q.repetition_rate, q.steps_present_rate) == (0.25, 0.25, 0.75)
    assert q.contradiction_rate == 0 and q.clean_rate == 0.75 and q.mean_step_chars > 10
    assert (q.judged_steps, q.judged_wrong_rate) == (5, 0.2)
    out = cli("curate", "stats", "--run", "teacher-gold", "-w", str(ws.root), env={"COLUMNS": "200"}).stdout
    assert "teacher-gold (gold shown)" in out and "label compliance, not accuracy" in out
    assert "teacher quality" in out and "25.0%" in out
    shown = json.loads(cli("curate", "stats", "--run", "teacher-gold", "-w", str(ws.root), "--json").stdout)[0]
    assert shown["gold_shown"] and shown["quality"]["truncation_rate"] == 0.25
    version = export_dataset(ws, "card", ["sft"], "label_first", plain_prompt).path
    manifest = json.loads((version / "manifest.json").read_text())
    assert {r["name"]: r["gold_shown"] for r in manifest["runs"]}["teacher-gold"]
    assert manifest["statistics"]["teacher_quality"]["teacher-gold"]["truncation_rate"] == 0.25
    card = (version / "README.md").read_text()
    assert "| teacher-gold (gold shown) | 4 | 25.0% | 25.0% | 75.0% |" in card and "label compliance, not accuracy" in card


def test_limit_draws_whole_queries_at_random_seeded(ws) -> None:
    from curation.runs import generation_pair_ids

    with open_store(ws) as store:
        query_of = dict(store.rows("SELECT pair_id, query_id FROM pairs"))
        ingest_order = generation_pair_ids(store)
        first = generation_pair_ids(store, limit=40, seed=0)
        again = generation_pair_ids(store, limit=40, seed=0)
        other = generation_pair_ids(store, limit=40, seed=1)
    assert len(first) == 40 and first == again and set(first) != set(other)
    assert first != ingest_order[:40]  # not the first rows ingested
    assert first == [p for p in ingest_order if p in set(first)]  # still in ingest order
    per_query: dict[str, int] = {}
    for p in first:
        per_query[query_of[p]] = per_query.get(query_of[p], 0) + 1
    whole = sum(1 for q, n in per_query.items() if n == sum(1 for v in query_of.values() if v == q))
    assert whole >= len(per_query) - 1  # only the last query drawn may be cut
