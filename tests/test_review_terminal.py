"""The real `cotgen review` in a pseudo-terminal: keys, $EDITOR, quit, resume, a crash mid-session, no terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import helpers_review
from helpers_review import Terminal, editor_command, seed_samples, set_review_config

from schemas.answer import parse_answer
from schemas.labels import BUILTIN_SCHEMES

from conftest import store_rows

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws


def _ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("# six items with parsed steps\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return path


def test_the_real_command_at_80x24_keys_editor_quit_and_resume(review_ws: Path, tmp_path: Path, cli) -> None:
    """End to end in a real 80x24 terminal: keys, a menu, $EDITOR with the app suspended, a note, quit, resume.
    (Every key at 80x24, 120x40 and 200x60 is covered under Pilot in test_review_app.py.)"""
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    samples = [s for s in seed_samples(review_ws, per_pair=2) if s.parse_status == "ok" and s.consistent]
    chosen = [s.sample_id for s in samples[:4]]
    queue = f"ids:{_ids_file(tmp_path, chosen)}"
    env = {"EDITOR": editor_command(tmp_path)}

    t = Terminal(review_ws, "alice", "--queue", queue, "--limit", "4", env=env, size=(80, 24))
    assert t.card() == (1, 4, chosen[0])
    t.press("a")                                   # 1: accept
    assert t.card(other_than=chosen[0]) == (2, 4, chosen[1])
    t.press("r")                                   # 2: reject, reason 2 (bad_reasoning)
    t.expect("reject: reason")
    t.press("2")
    assert t.card(other_than=chosen[1]) == (3, 4, chosen[2])
    t.press("e")                                   # 3: edit in $EDITOR (the script rewrites the answer)
    t.expect(re.escape(f"item 4 of 4 · id {chosen[3]}"))
    t.press("n")                                   # 4: a note, then quit
    t.expect("type a note")           # the note box is open and has the keys
    t.press("size chart checked\r")
    t.expect("note: size chart checked")
    t.press("q")
    out = t.finish()
    assert "session ended (quit): 3 decisions, 4 entries this session" in out
    assert "all decisions are in the store" in out

    rows = store_rows(review_ws, "SELECT action, sample_id, reason, note, edited_text FROM reviews "
                                 "WHERE annotator = 'alice' ORDER BY created_at, review_id")
    assert [r[:2] for r in rows] == [("accept", chosen[0]), ("reject", chosen[1]), ("edit", chosen[2]),
                                     ("note", chosen[3])]
    assert rows[1][2] == "bad_reasoning" and rows[3][3] == "size chart checked"
    parsed = parse_answer(rows[2][4], BUILTIN_SCHEMES["taosr4"])
    assert (parsed.status, parsed.label, len(parsed.steps)) == ("ok", "L1", 5)

    # Resume: the one unfinished item comes back; deciding it empties the queue and ends the session.
    t = Terminal(review_ws, "alice", "--queue", queue, "--limit", "4", env=env, size=(80, 24))
    assert t.card() == (1, 1, chosen[3])
    t.press("a")
    out = t.finish()
    assert "session ended (queue empty)" in out
    decisions = dict(store_rows(review_ws, "SELECT sample_id, action FROM sample_decisions"))
    assert decisions == {chosen[0]: "accept", chosen[1]: "reject", chosen[2]: "edit", chosen[3]: "accept"}

    # Exactly once: the journal and the store hold the same ids, none twice.
    journal = (review_ws / "reviews" / "journal" / "alice.jsonl").read_text().splitlines()
    journal_ids = Counter(json.loads(line)["review_id"] for line in journal)
    store_ids = Counter(r[0] for r in store_rows(review_ws, "SELECT review_id FROM reviews"))
    assert journal_ids == store_ids and max(store_ids.values()) == 1


def test_ctrl_c_ends_the_sitting_like_any_command(review_ws: Path, tmp_path: Path) -> None:
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    seed_samples(review_ws, per_pair=1)
    t = Terminal(review_ws, "cleo", "--limit", "3", size=(80, 24))
    _, _, first = t.card()
    t.press("a")
    t.card(other_than=first)
    t.press("\x03")
    out = t.finish()
    assert "session ended (quit): 1 decisions" in out and "all decisions are in the store" in out
    assert "interrupted" in out and t.child.exitstatus == 130
    assert store_rows(review_ws, "SELECT sample_id, action FROM reviews WHERE annotator = 'cleo'") == [
        (first, "accept")]


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
        _, _, second = t.card(other_than=first)
        t.press("r")
        t.expect("reject: reason")
        t.press("3")
        t.card(other_than=second)
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
