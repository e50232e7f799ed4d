"""The real `cotgen review` in a pseudo-terminal: every action, undo, quit, resume, and a crash mid-session."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import helpers_review
import pytest
from helpers_review import RULE_IDS, Terminal, editor_command, seed_samples, set_review_config, store_rows

from retrieval.documents import load_documents
from retrieval.index import RuleIndex
from schemas.answer import parse_answer
from schemas.labels import BUILTIN_SCHEMES
from schemas.workspace import Workspace

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws


def _ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("# six items with parsed steps\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return path


def test_every_action_then_undo_quit_and_resume(review_ws: Path, tmp_path: Path, cli) -> None:
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    samples = [s for s in seed_samples(review_ws, per_pair=2) if s.parse_status == "ok" and s.consistent]
    chosen = [s.sample_id for s in samples[:6]]
    queue = f"ids:{_ids_file(tmp_path, chosen)}"
    env = {"EDITOR": editor_command(tmp_path)}

    t = Terminal(review_ws, "alice", "--queue", queue, "--limit", "6", env=env)
    assert t.card() == (1, 6, chosen[0])
    t.press("a")                                   # 1: accept
    assert t.card() == (2, 6, chosen[1])
    t.press("r")                                   # 2: reject, reason 2 (bad_reasoning)
    t.expect("reject: reason")
    t.press("2")
    assert t.card() == (3, 6, chosen[2])
    t.press("l")                                   # 3: relabel gold to L1 (grade 4) for reason 1 (gold_wrong) ...
    t.expect("relabel: new gold label")
    t.press("4")
    t.expect("relabel to L1: reason")
    t.press("1")
    assert t.card() == (3, 6, chosen[2])           # ... which keeps the card: the sample still needs a decision
    t.press("m")                                   # mark steps: 1 correct, 2 incorrect, 3 correct, stop
    for key, step in (("y", 1), ("n", 2), ("y", 3)):
        t.expect(f"step {step} of 5")
        t.press(key)
    t.expect("step 4 of 5")
    t.press("x")
    t.card()
    t.press("a")
    assert t.card() == (4, 6, chosen[3])
    t.press("e")                                   # 4: edit in $EDITOR (the script rewrites the answer)
    assert t.card() == (5, 6, chosen[4])
    t.press("n")                                   # 5: a note, then skip
    t.expect("note: ")
    t.child.sendline("size chart checked")
    assert t.card() == (5, 6, chosen[4])
    t.press("s")
    assert t.card() == (6, 6, chosen[5])
    t.press("u")                                   # undo the skip: back to item 5
    assert t.card() == (5, 6, chosen[4])
    t.expect("undid skip")
    t.press("q")
    out = t.finish()
    assert "all decisions are in the store" in out

    rows = store_rows(review_ws, "SELECT action, sample_id, reason, new_label, step_index, step_correct, note, "
                                         "edited_text, review_id FROM reviews WHERE annotator = 'alice' "
                                         "ORDER BY created_at, review_id")
    actions = [r[0] for r in rows]
    assert actions == ["accept", "reject", "relabel", "step", "step", "step", "accept", "edit", "note", "skip", "undo"]
    by_action = {r[0]: r for r in rows}
    assert by_action["reject"][1:3] == (chosen[1], "bad_reasoning")
    assert by_action["relabel"][1:4] == (chosen[2], "gold_wrong", "L1")
    assert [(r[4], r[5]) for r in rows if r[0] == "step"] == [(0, True), (1, False), (2, True)]
    edited = by_action["edit"][7]
    parsed = parse_answer(edited, BUILTIN_SCHEMES["taosr4"])
    assert (parsed.status, parsed.label, len(parsed.steps)) == ("ok", "L1", 5)
    assert by_action["note"][6] == "size chart checked"
    assert by_action["undo"][2] == by_action["skip"][8]  # the undo row names the skip it cancels

    # The 002 views see the decisions as curation will.
    decisions = dict(store_rows(review_ws, "SELECT sample_id, action FROM sample_decisions"))
    assert decisions == {chosen[0]: "accept", chosen[1]: "reject", chosen[2]: "accept", chosen[3]: "edit"}
    pair3 = next(s.pair_id for s in samples if s.sample_id == chosen[2])
    assert store_rows(review_ws, "SELECT pair_id, new_label FROM pair_relabels") == [(pair3, "L1")]
    assert store_rows(review_ws, "SELECT label FROM gold_pairs WHERE pair_id = ?", [pair3]) == [("L1",)]
    assert sorted(store_rows(review_ws, "SELECT step_index, step_correct FROM step_marks")) == [
        (0, True), (1, False), (2, True)]
    assert store_rows(review_ws, "SELECT count(*) FROM live_reviews WHERE action = 'skip'") == [(0,)]

    # Resume: the unfinished items come back first, item 5 (its skip undone) then item 6.
    t = Terminal(review_ws, "alice", "--queue", queue, "--limit", "6", env=env)
    assert t.card() == (1, 2, chosen[4])
    t.press("a")
    assert t.card() == (2, 2, chosen[5])
    t.press("r")
    t.expect("reject: reason")
    t.press("1")
    out = t.finish()
    assert "queue empty" in out
    decisions = dict(store_rows(review_ws, "SELECT sample_id, action FROM sample_decisions"))
    assert decisions == {chosen[0]: "accept", chosen[1]: "reject", chosen[2]: "accept", chosen[3]: "edit",
                         chosen[4]: "accept", chosen[5]: "reject"}

    # Exactly once: the journal and the store hold the same ids, none twice.
    journal = (review_ws / "reviews" / "journal" / "alice.jsonl").read_text().splitlines()
    journal_ids = Counter(__import__("json").loads(line)["review_id"] for line in journal)
    store_ids = Counter(r[0] for r in store_rows(review_ws, "SELECT review_id FROM reviews"))
    assert journal_ids == store_ids and max(store_ids.values()) == 1

    stats = cli("review", "stats", "-w", str(review_ws), "--json")
    alice = __import__("json").loads(stats.stdout)["annotators"][0]
    assert (alice["annotator"], alice["items"], alice["skipped"]) == ("alice", 6, 0)
    assert alice["accept_rate"] == 0.5 and alice["relabel_rate"] == round(1 / 6, 4)


def _hold_store_lock(ws: Path) -> subprocess.Popen:
    """Another process holding the store's write lock until its stdin closes."""
    code = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
            "sys.stdin.readline(); c.close()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ws / "store.duckdb")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_decision_survives_a_kill_while_the_store_is_busy(review_ws: Path, cli) -> None:
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    seed_samples(review_ws, per_pair=1)
    t = Terminal(review_ws, "bob", "--limit", "5")
    _, _, first = t.card()
    holder = _hold_store_lock(review_ws)
    try:
        t.press("a")                # journaled and fsynced; the store is locked, so it cannot be copied yet
        _, _, second = t.card()
        t.press("r")
        t.expect("reject: reason")
        t.press("3")
        t.card()
        os.kill(t.child.pid, signal.SIGKILL)
        t.child.close()
        assert store_rows_after_release(holder, review_ws) == []
    finally:
        if holder.poll() is None:
            holder.stdin.close()
            holder.wait()
    for _ in range(2):  # any later review command copies the journal in, once
        cli("review", "export", "-w", str(review_ws), "-o", str(review_ws / "out.jsonl"))
        rows = store_rows(review_ws, "SELECT sample_id, action, reason FROM reviews WHERE annotator = 'bob' "
                                             "ORDER BY created_at")
        assert rows == [(first, "accept", ""), (second, "reject", "hallucination")]


def store_rows_after_release(holder: subprocess.Popen, ws: Path) -> list[tuple]:
    """Release the lock, then read bob's rows before anything flushes: the kill left them in the journal only."""
    holder.stdin.close()
    holder.wait()
    return store_rows(ws, "SELECT * FROM reviews WHERE annotator = 'bob'")


def test_review_needs_a_terminal_and_an_annotator(review_ws: Path, cli) -> None:
    proc = cli("review", "-w", str(review_ws), "--annotator", "alice", check=False)
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr
    proc = cli("review", "-w", str(review_ws), check=False)
    assert proc.returncode == 2 and "--annotator" in proc.stderr


@pytest.mark.slow  # loads the sentence-transformers embedder to build a real rule index
def test_card_lists_retrieved_rules_and_g_shows_them_in_full(review_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.open(review_ws)
    docs = [d for d in load_documents(["builtin"]) if d.id in RULE_IDS]
    assert len(docs) == len(RULE_IDS)
    RuleIndex.build(docs, ws.indexes_dir / ws.config.index.name)
    sample = next(s for s in seed_samples(review_ws, per_pair=1) if s.parse_status == "ok")
    assert store_rows(review_ws, "SELECT rule_ids FROM samples WHERE sample_id = ?", [sample.sample_id]) == [
        (RULE_IDS,)]
    t = Terminal(review_ws, "erin", "--queue", f"ids:{_ids_file(tmp_path, [sample.sample_id])}")
    assert t.card()[2] == sample.sample_id
    for doc in docs:
        t.expect(re.escape(doc.id))
    t.press("g")
    t.expect("guidelines · press g to go back")
    t.expect(re.escape(BUILTIN_SCHEMES["taosr4"].grades[0].meaning[:40]))
    for doc in docs:
        t.expect(re.escape(doc.title))
        t.expect(re.escape(doc.text.split("\n")[0][:40]))
    t.press("g")
    assert t.card()[2] == sample.sample_id
    t.press("q")
    t.finish()
