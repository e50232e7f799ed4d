"""Selections on real CrowdFlower pairs: SFT filters, DPO cases, GRPO sampling, steps, diversity, reviews."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers_curation import (
    SCHEME,
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
    sample_id,
    steps_for,
    with_curation,
    wrong_label,
)

from curation.export import SELECTORS, export_dataset
from curation.selection import open_selection
from curation.store import open_store
from schemas.answer import render_answer
from schemas.sample import Step
from schemas.workspace import Workspace


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("curation-select") / "ws"
    ingest_crowdflower(root, shared_data)
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Workspace:
    return copy_workspace(base, tmp_path / "ws")


def select(ws: Workspace, kinds: list[str], order: str = "label_first", embed=None) -> tuple[dict, dict]:
    """Run selections the way export does; returns ({kind: rows}, {kind: counts})."""
    rows, counts = {}, {}
    with open_store(ws, read_only=True) as store:
        ctx = open_selection(store, ws.config, order, [], embed)
        for kind in kinds:
            counts[kind] = SELECTORS[kind](ctx)
            rows[kind] = store.query(f"SELECT * FROM rows_{kind} ORDER BY pair_id, draw")
    return rows, counts


def exported_dpo(ws: Workspace, name: str) -> list[dict]:
    """DPO rows as the export writes them (every split), with the texts pulled out of the messages."""
    result = export_dataset(ws, name, ["dpo"], "label_first", plain_prompt)
    rows = pq.read_table(result.path / "data" / "dpo").to_pylist() if result.version else []
    return [{**r, "chosen_text": r["chosen"][0]["content"], "rejected_text": r["rejected"][0]["content"]} for r in rows]


def some_pairs(ws: Workspace, n: int) -> list[PairRow]:
    with open_store(ws, read_only=True) as store:
        return pairs_of_queries(store, 3)[:n]


def inconsistent_text(pair: PairRow) -> str:
    """Right label line, but the judgement step argues for another grade."""
    return render_answer(steps_for(pair, wrong_label(pair.label, "x")), pair.label, "cot_first")


def partial_text(pair: PairRow) -> str:
    return render_answer(steps_for(pair, pair.label)[:3], pair.label, "cot_first")


def test_sft_keeps_clean_right_teacher_answers_k_per_pair(ws: Workspace) -> None:
    a, b = some_pairs(ws, 2)
    with open_store(ws) as store:
        run = add_run(store, "teacher-1", "teacher")
        add_samples(store, run, [
            (a.pair_id, 0, answer_text(a, a.label, "cot_first", 10)),      # right, clean (one char longer)
            (a.pair_id, 1, answer_text(a, a.label, "cot_first", 1)),       # right, clean
            (a.pair_id, 2, answer_text(a, wrong_label(a.label, 1), "cot_first", 2)),  # wrong label
            (b.pair_id, 0, inconsistent_text(b)),                           # right label, inconsistent
            (b.pair_id, 1, partial_text(b)),                                # right label, steps missing
            (b.pair_id, 2, "The item looks fine to me."),                   # no label
        ])
        add_review(store, "accept", a.pair_id, sample_id=sample_id(run, a.pair_id, 1))
    rows, counts = select(with_curation(ws, sft_per_pair=1), ["sft"], order="label_first")
    assert counts["sft"]["eligible"] == 2 and counts["sft"]["rows"] == 1
    (row,) = rows["sft"]
    assert row["sample_id"] == sample_id(run, a.pair_id, 1)  # the reviewer-accepted answer goes first
    assert row["completion"] == render_answer(steps_for(a, a.label, 1), a.label, "label_first")
    assert row["completion"].startswith(f"Label: {a.label}\n1. Query understanding:")
    assert row["reasoning_content"] in row["completion"] and "Label:" not in row["reasoning_content"]

    rows, _ = select(with_curation(ws, sft_per_pair=3), ["sft"], order="cot_first")
    assert {r["sample_id"] for r in rows["sft"]} == {sample_id(run, a.pair_id, i) for i in (0, 1)}
    assert all(r["completion"].endswith(f"\nLabel: {a.label}") for r in rows["sft"])

    short = min(len(r["completion"]) for r in rows["sft"])
    rows, counts = select(with_curation(ws, sft_per_pair=3, sft_max_chars=short), ["sft"])
    assert counts["sft"]["within_length"] == 1 and len(rows["sft"]) == 1


def test_dpo_mixed_all_wrong_all_right(ws: Workspace) -> None:
    mixed, all_wrong, all_right = some_pairs(ws, 3)
    bad = {p.pair_id: wrong_label(p.label, "dpo") for p in (mixed, all_wrong, all_right)}
    with open_store(ws) as store:
        teacher = add_run(store, "teacher-1", "teacher")
        add_samples(store, teacher, [(p.pair_id, 0, answer_text(p, p.label, "cot_first", 7))
                                     for p in (mixed, all_wrong, all_right)])
        policy = add_run(store, "policy-1", "policy", started=5)
        add_samples(store, policy, [
            (mixed.pair_id, 0, answer_text(mixed, mixed.label, "label_first", 0)),
            (mixed.pair_id, 1, answer_text(mixed, mixed.label, "label_first", 1)),
            (mixed.pair_id, 2, answer_text(mixed, bad[mixed.pair_id], "label_first", 2)),
            (mixed.pair_id, 3, answer_text(mixed, bad[mixed.pair_id], "label_first", 2)),  # same text: one kept
            *[(all_wrong.pair_id, i, answer_text(all_wrong, bad[all_wrong.pair_id], "label_first", i % 2))
              for i in range(4)],
            *[(all_right.pair_id, i, answer_text(all_right, all_right.label, "label_first", i)) for i in range(4)],
        ])
    _rows, counts = select(with_curation(ws, dpo_per_pair=2), ["dpo"])
    assert counts["dpo"]["pairs_by_case"] == {"mixed": 1, "all_wrong": 1, "all_right": 1}
    dpo = exported_dpo(with_curation(ws, dpo_per_pair=2), "cap2")
    by_pair: dict[str, list[dict]] = {}
    for r in dpo:
        by_pair.setdefault(r["pair_id"], []).append(r)
    assert all_right.pair_id not in by_pair

    m = by_pair[mixed.pair_id]
    assert len(m) == 2 and {r["chosen_from"] for r in m} == {"policy"}
    assert {r["chosen_text"] for r in m} == {answer_text(mixed, mixed.label, "label_first", i) for i in (0, 1)}
    assert {r["rejected_text"] for r in m} == {answer_text(mixed, bad[mixed.pair_id], "label_first", 2)}

    w = by_pair[all_wrong.pair_id]
    assert len(w) == 2 and {r["chosen_from"] for r in w} == {"teacher"}
    # The teacher's CoT, re-rendered in the policy's answer order with the gold label.
    assert {r["chosen_text"] for r in w} == {render_answer(steps_for(all_wrong, all_wrong.label, 7), all_wrong.label,
                                                           "label_first")}
    assert {r["rejected_text"] for r in w} == {answer_text(all_wrong, bad[all_wrong.pair_id], "label_first", i)
                                               for i in (0, 1)}
    assert all(r["chosen_text"] != r["rejected_text"] and r["label"] for r in dpo)

    rows, _ = select(with_curation(ws, dpo_per_pair=2, dpo_teacher_fallback=False), ["dpo"])
    assert {r["pair_id"] for r in rows["dpo"]} == {mixed.pair_id}
    rows, _ = select(with_curation(ws, dpo_per_pair=1), ["dpo"])
    assert len(rows["dpo"]) == 2


def test_grpo_keeps_partly_solved_prompts_balanced(ws: Workspace) -> None:
    build_store(ws, n_queries=30, teacher_n=1, policy_n=4)
    rows, counts = select(with_curation(ws, difficulty={"gamma": 0.75}), ["grpo"])
    g = counts["grpo"]
    assert all(0 < r["c"] < 0.75 * r["n"] for r in rows["grpo"])
    with open_store(ws, read_only=True) as store:
        expected_kept = store.scalar(
            "SELECT count(*) FROM (SELECT s.pair_id, count(*) FILTER (WHERE s.predicted_label = p.label) AS c "
            "FROM samples s JOIN pairs p USING (pair_id) WHERE s.run_id = 'run-policy-1' GROUP BY s.pair_id) "
            "WHERE c IN (1, 2)")
    assert g["kept"] == expected_kept
    assert len(set(g["labels_after"].values())) == 1  # fully balanced
    assert g["rows"] == len(g["labels_after"]) * min(g["labels_before"].values())
    assert g["cv_before"] > 0 and g["cv_after"] == 0
    assert {r["difficulty"] for r in rows["grpo"]} <= {"hard", "medium"}

    rows, counts = select(with_curation(ws, difficulty={"gamma": 0.75}, grpo_balance=None), ["grpo"])
    assert counts["grpo"]["rows"] == counts["grpo"]["kept"] and counts["grpo"]["cv_after"] == counts["grpo"]["cv_before"]
    rows, counts = select(with_curation(ws, difficulty={"gamma": 0.75}, grpo_balance=2.0), ["grpo"])
    cap = 2 * min(counts["grpo"]["labels_before"].values())
    assert all(n == min(cap, counts["grpo"]["labels_before"][k]) for k, n in counts["grpo"]["labels_after"].items())


def exported_sft_by_split(ws: Workspace, name: str) -> tuple[dict[str, list[dict]], dict]:
    result = export_dataset(ws, name, ["sft"], "label_first", plain_prompt)
    data = result.path / "data" / "sft"
    return {f.stem: pq.read_table(f).to_pylist() for f in data.glob("*.parquet")}, result.selection["sft"]


def test_sft_balance_caps_train_labels_and_keeps_the_natural_mix_for_evaluation(ws: Workspace) -> None:
    build_store(ws, n_queries=30, teacher_n=1, policy_n=1)
    natural, counts = exported_sft_by_split(ws, "natural")
    train = Counter(r["label"] for r in natural["train"])
    assert counts["balanced_out"] == 0 and len(set(train.values())) > 1, "the unbalanced mix is the default"
    rarest = min(train.values())
    for balance in (1.0, 1.5):
        balanced, counts = exported_sft_by_split(with_curation(ws, sft_balance=balance), f"balanced-{balance}")
        after = Counter(r["label"] for r in balanced["train"])
        assert after == {k: min(n, int(balance * rarest)) for k, n in train.items()}
        assert counts["balanced_out"] == train.total() - after.total()
        for split in ("validation", "test"):
            assert [r["pair_id"] for r in balanced[split]] == [r["pair_id"] for r in natural[split]], split
    again = export_dataset(with_curation(ws, sft_balance=1.0), "balanced-1.0", ["sft"], "label_first", plain_prompt)
    assert not again.created, "a seeded draw picks who stays: the same inputs give the same rows"


def test_curriculum_stage_follows_difficulty(ws: Workspace) -> None:
    build_store(ws, n_queries=10, teacher_n=1, policy_n=4)
    rows, _ = select(with_curation(ws, curriculum=["easy", "medium", "hard", "unsolved"]), ["sft"])
    order = {"easy": 1, "medium": 2, "hard": 3, "unsolved": 4}
    assert rows["sft"] and all(r["stage"] == order[r["difficulty"]] for r in rows["sft"])
    rows, _ = select(with_curation(ws, curriculum=["hard", "easy"]), ["sft"])
    assert all(r["stage"] == {"hard": 1, "easy": 2}.get(r["difficulty"], 3) for r in rows["sft"])


def test_reviews_win(ws: Workspace) -> None:
    rejected, relabelled, edited = some_pairs(ws, 3)
    new_label = wrong_label(relabelled.label, "relabel")
    with open_store(ws) as store:
        teacher = add_run(store, "teacher-1", "teacher")
        add_samples(store, teacher, [
            (rejected.pair_id, 0, answer_text(rejected, rejected.label, "cot_first")),
            (relabelled.pair_id, 0, answer_text(relabelled, relabelled.label, "cot_first", 0)),
            (relabelled.pair_id, 1, answer_text(relabelled, new_label, "cot_first", 1)),
            (edited.pair_id, 0, answer_text(edited, wrong_label(edited.label, 3), "cot_first")),
        ])
        policy = add_run(store, "policy-1", "policy", started=5)
        add_samples(store, policy, [
            (rejected.pair_id, 0, answer_text(rejected, rejected.label, "label_first", 0)),
            (rejected.pair_id, 1, answer_text(rejected, wrong_label(rejected.label, 4), "label_first", 1)),
            (rejected.pair_id, 2, answer_text(rejected, wrong_label(rejected.label, 5), "label_first", 2)),
        ])
        add_review(store, "reject", rejected.pair_id, sample_id=sample_id(teacher, rejected.pair_id, 0))
        add_review(store, "reject", rejected.pair_id, sample_id=sample_id(policy, rejected.pair_id, 1))
        add_review(store, "relabel", relabelled.pair_id, new_label=new_label)
        fixed = [Step(name=s.name, text=f"Edited: {s.text}") for s in steps_for(edited, edited.label)]
        add_review(store, "edit", edited.pair_id, sample_id=sample_id(teacher, edited.pair_id, 0),
                   edited_text=render_answer(fixed, edited.label, "cot_first"))
        # An undone rejection no longer counts.
        undone = add_review(store, "reject", edited.pair_id, sample_id=sample_id(teacher, edited.pair_id, 0), minutes=5)
        add_review(store, "undo", edited.pair_id, reason=undone, minutes=6)
    rows, _ = select(ws, ["sft", "dpo"])
    sft = {r["pair_id"]: r for r in rows["sft"]}
    assert rejected.pair_id not in sft
    assert sft[relabelled.pair_id]["sample_id"] == sample_id(teacher, relabelled.pair_id, 1)
    assert sft[relabelled.pair_id]["label"] == new_label
    assert sft[relabelled.pair_id]["completion"].startswith(f"Label: {new_label}\n")
    assert sft[edited.pair_id]["completion"] == render_answer(fixed, edited.label, "label_first")
    used = {r["chosen_sample_id"] for r in rows["dpo"]} | {r["rejected_sample_id"] for r in rows["dpo"]}
    assert sample_id(policy, rejected.pair_id, 1) not in used
    assert {r["rejected_sample_id"] for r in rows["dpo"]} == {sample_id(policy, rejected.pair_id, 2)}


def test_steps_from_step_marks(ws: Workspace) -> None:
    a, b, c = some_pairs(ws, 3)
    with open_store(ws) as store:
        policy = add_run(store, "policy-1", "policy")
        add_samples(store, policy, [(p.pair_id, 0, answer_text(p, p.label, "label_first")) for p in (a, b, c)])
        for i in range(5):  # every step marked
            add_review(store, "step", a.pair_id, sample_id=sample_id(policy, a.pair_id, 0), step_index=i,
                       step_correct=i != 3)
        add_review(store, "accept", b.pair_id, sample_id=sample_id(policy, b.pair_id, 0))
        add_review(store, "step", b.pair_id, sample_id=sample_id(policy, b.pair_id, 0), step_index=2, step_correct=False)
        add_review(store, "step", c.pair_id, sample_id=sample_id(policy, c.pair_id, 0), step_index=0, step_correct=True)
        # A later mark on the same step supersedes the earlier one.
        add_review(store, "step", a.pair_id, sample_id=sample_id(policy, a.pair_id, 0), step_index=0,
                   step_correct=False, minutes=9)
    rows, counts = select(ws, ["steps"])
    assert counts["steps"] == {"marked_samples": 3, "incomplete": 1, "rows": 2}
    by_pair = {r["pair_id"]: r for r in rows["steps"]}
    assert by_pair[a.pair_id]["labels"] == [False, True, True, False, True]
    assert by_pair[b.pair_id]["labels"] == [True, True, False, True, True]
    assert by_pair[a.pair_id]["completions"][1].startswith("2. Item understanding: ")
    assert len(by_pair[a.pair_id]["completions"]) == 5


@pytest.mark.slow
def test_diversity_filter_drops_near_duplicate_reasoning(ws: Workspace) -> None:
    """Real embeddings (all-MiniLM-L6-v2 through retrieval's embedder)."""
    from retrieval.embedder import Embedder

    a, b = some_pairs(ws, 2)
    other = [Step(name="query_understanding", text="Shoppers want a specific product for a concrete task."),
             Step(name="item_understanding", text="This listing covers an unrelated accessory kit."),
             Step(name="category_matching", text="Categories share the department only."),
             Step(name="attribute_matching", text="None of the requested attributes are present."),
             Step(name="relevance_judgement", text=f"Weak match overall: {SCHEME.grade(b.label).name}, grade {b.label}.")]
    with open_store(ws) as store:
        teacher = add_run(store, "teacher-1", "teacher")
        add_samples(store, teacher, [
            (a.pair_id, 0, answer_text(a, a.label, "cot_first", 0)),
            (a.pair_id, 1, answer_text(a, a.label, "cot_first", 1)),  # differs by one digit
            (b.pair_id, 0, answer_text(b, b.label, "cot_first", 0)),
            (b.pair_id, 1, render_answer(other, b.label, "cot_first")),
        ])
    embed = Embedder(ws.config.index.embedder).encode
    rows, counts = select(with_curation(ws, sft_per_pair=2, diversity_threshold=0.97), ["sft"], embed=embed)
    kept = {(r["pair_id"], r["sample_id"]) for r in rows["sft"]}
    assert counts["sft"]["near_duplicates"] == 1
    assert len([k for k in kept if k[0] == a.pair_id]) == 1
    assert {k for k in kept if k[0] == b.pair_id} == {(b.pair_id, sample_id(teacher, b.pair_id, i)) for i in (0, 1)}
    rows, counts = select(with_curation(ws, sft_per_pair=2), ["sft"])
    assert counts["sft"]["near_duplicates"] == 0 and len(rows["sft"]) == 4


def pick(store, n: int, label: str | None = None) -> list[PairRow]:
    """n pairs of distinct queries (with gold `label` when given), from the first 20 queries."""
    found, queries = [], set()
    for p in pairs_of_queries(store, 20):
        if (label is None or p.label == label) and p.query_id not in queries:
            found.append(p)
            queries.add(p.query_id)
    return found[:n]


def misplaced_text(pair: PairRow) -> str:
    """Five clean steps, but the `Label:` line sits between steps 2 and 3."""
    lines = render_answer(steps_for(pair, pair.label), pair.label, "cot_first").splitlines()
    return "\n".join([*lines[:2], lines[-1], *lines[2:-1]])


def all_match_text(pair: PairRow) -> str:
    """Labelled with the lowest grade while every step says the item matches (the trial's contradiction)."""
    return render_answer([Step(name=s.name, text="The item matches.") for s in steps_for(pair, pair.label)],
                         pair.label, "cot_first")


def repetitive_text(pair: PairRow) -> str:
    steps = steps_for(pair, pair.label)
    steps[1] = Step(name="item_understanding", text="It is soft and it is soft and it is soft and it is soft.")
    return render_answer(steps, pair.label, "cot_first")


# The trial's junk policy answer: no `Label:` line, a first line saying L1, five untitled steps, "grade is L4".
JUNK = ("L1 - Irrelevant\n1. The item matches.\n2. The item matches.\n3. The item matches.\n4. The item matches.\n"
        "5. The item matches, so the grade is L4.")


def test_quality_gates_drop_with_their_reason_and_junk_never_trains(ws: Workspace) -> None:
    with open_store(ws) as store:
        good, cut, rep, misplaced, missing = pick(store, 5, "L4")[:5]
        (lowest,) = pick(store, 1, "L1")
        junk_pair = pick(store, 6, "L4")[5]
        teacher = add_run(store, "teacher-g", "teacher")
        add_samples(store, teacher, [
            (good.pair_id, 0, answer_text(good, good.label, "cot_first")),
            (rep.pair_id, 0, repetitive_text(rep)),
            (lowest.pair_id, 0, all_match_text(lowest)),
            (misplaced.pair_id, 0, misplaced_text(misplaced)),
            (missing.pair_id, 0, partial_text(missing)),
            (junk_pair.pair_id, 0, JUNK),
        ])
        add_samples(store, teacher, [(cut.pair_id, 0, answer_text(cut, cut.label, "cot_first"))], finish_reason="length")
        policy = add_run(store, "policy-g", "policy", started=10)
        add_samples(store, policy, [(junk_pair.pair_id, 0, JUNK), *(
            (junk_pair.pair_id, i, answer_text(junk_pair, wrong_label(junk_pair.label, i), "label_first", i))
            for i in (1, 2, 3))])
        add_samples(store, policy, [(good.pair_id, 1, answer_text(good, wrong_label(good.label, 1), "label_first"))])
        add_samples(store, policy, [(good.pair_id, 0, answer_text(good, good.label, "label_first"))],
                    finish_reason="length")  # right, but cut off: never a chosen answer
        junk_sample = sample_id(policy, junk_pair.pair_id, 0)
        assert store.scalar("SELECT parse_status FROM samples WHERE sample_id = ?", [junk_sample]) == "partial"
    result = export_dataset(ws, "gates", ["sft", "dpo", "grpo"], "label_first", plain_prompt)
    dropped = pq.read_table(result.path / "dropped.parquet").to_pylist()
    sft_reasons = {r["pair_id"]: r["reason"] for r in dropped if r["kind"] == "sft"}
    assert sft_reasons == {cut.pair_id: "truncated", rep.pair_id: "repetitive", lowest.pair_id: "inconsistent",
                           misplaced.pair_id: "label_misplaced", missing.pair_id: "steps_missing",
                           junk_pair.pair_id: "label_misplaced"}
    sft = pq.read_table(result.path / "data" / "sft").to_pylist()
    assert [r["pair_id"] for r in sft] == [good.pair_id]
    dpo = pq.read_table(result.path / "data" / "dpo").to_pylist() if (result.path / "data" / "dpo").exists() else []
    assert all(r["chosen_sample_id"] != junk_sample for r in dpo)
    (rescued,) = [r for r in dpo if r["pair_id"] == good.pair_id]
    assert rescued["chosen_from"] == "teacher" and rescued["chosen_sample_id"] == sample_id(teacher, good.pair_id, 0)
    assert {(r["kind"], r["reason"]) for r in dropped if r["pair_id"] == junk_pair.pair_id} >= {
        ("grpo", "all_wrong"), ("dpo", "no_chosen")}  # the junk is no right rollout and no chosen answer

    off = with_curation(ws, drop_truncated=False, max_ngram_repeats=None)
    rows, _ = select(off, ["sft"])
    assert {r["pair_id"] for r in rows["sft"]} == {good.pair_id, cut.pair_id, rep.pair_id}


def test_policy_answers_in_the_other_order_are_never_chosen(ws: Workspace) -> None:
    """A policy run prompted for cot_first writes the label last: its raw answers cannot be the chosen side of a
    label_first export (the teacher's answer stands in); a cot_first export takes them."""
    with open_store(ws) as store:
        pairs = pick(store, 4)
        teacher = add_run(store, "teacher-o", "teacher")
        add_samples(store, teacher, [(p.pair_id, 0, answer_text(p, p.label, "cot_first")) for p in pairs])
        policy = add_run(store, "policy-o", "policy", started=10, params={"order": "cot_first"})
        add_samples(store, policy, [a for p in pairs for a in (
            (p.pair_id, 0, answer_text(p, p.label, "cot_first")),
            (p.pair_id, 1, answer_text(p, wrong_label(p.label, 1), "cot_first", 1)))])
    label_first = export_dataset(ws, "lf", ["dpo"], "label_first", plain_prompt)
    assert label_first.selection["dpo"]["policy_in_format"] is False
    assert set(label_first.selection["dpo"]["rows_by_chosen"]) == {"teacher"}
    cot_first = export_dataset(ws, "cf", ["dpo"], "cot_first", plain_prompt)
    assert cot_first.selection["dpo"]["policy_in_format"] is True
    assert cot_first.selection["dpo"]["rows_by_chosen"]["policy"]["pairs"] == 4
