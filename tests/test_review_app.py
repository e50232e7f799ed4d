"""The Textual review card under Pilot at 80x24, 120x40 and 200x60: what is on screen, every key's decision in the
store, undo, quit and resume, on a real store, journal and rule index."""

from __future__ import annotations

import asyncio
import errno
import json
import re
from collections import Counter
from pathlib import Path

import helpers_review
import pytest
from helpers_review import RULE_IDS, editor_command, on_card, screen_text, seed_samples, set_review_config

from cotgen.app.review import end_session, queue_spec, start_session
from cotgen.tui.review import MarkScreen, MenuScreen, NoteScreen, ReviewApp
from curation.review import session as session_module
from retrieval.documents import load_documents
from retrieval.index import RuleIndex
from schemas.answer import parse_answer
from schemas.labels import BUILTIN_SCHEMES
from schemas.workspace import Workspace

from conftest import store_rows

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws

SIZES = [(80, 24), (120, 40), (200, 60)]
KEYS = ["a accept", "r reject", "l relabel", "e edit", "m mark", "n note", "s skip", "u undo", "g guide", "q quit"]


def _ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("# items with parsed steps\n" + "\n".join(ids) + "\n", encoding="utf-8")
    return path


def _desk(ws_root: Path, annotator: str, queue: str, limit: int | None = None):
    return start_session(Workspace.open(ws_root), annotator, queue_spec(annotator, queue, None, limit), limit)


def _run(coro) -> None:
    asyncio.run(coro)


def _visible(lines: list[str]) -> str:
    return "\n".join(lines)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_key_writes_its_decision_then_undo_quit_and_resume(review_ws: Path, tmp_path: Path, cli, monkeypatch,
                                                                  size: tuple[int, int]) -> None:
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    samples = [s for s in seed_samples(review_ws, per_pair=2) if s.parse_status == "ok" and s.consistent]
    chosen = [s.sample_id for s in samples[:6]]
    queue = f"ids:{_ids_file(tmp_path, chosen)}"
    monkeypatch.setenv("EDITOR", editor_command(tmp_path))  # the real run_editor runs this script
    desk = _desk(review_ws, "alice", queue, limit=6)
    app = ReviewApp(desk)

    async def first_sitting() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            assert on_card(app) == (1, 6, chosen[0])
            await pilot.press("a")                         # 1: accept
            assert on_card(app) == (2, 6, chosen[1])
            await pilot.press("r")                         # 2: reject, reason 2 (bad_reasoning)
            assert isinstance(app.screen, MenuScreen) and app.screen.title_text == "reject: reason"
            await pilot.press("2")
            assert on_card(app) == (3, 6, chosen[2])
            await pilot.press("l", "4")                    # 3: relabel gold to L1 (grade 4) for reason 1 ...
            assert isinstance(app.screen, MenuScreen) and app.screen.title_text == "relabel to L1: reason"
            await pilot.press("1")
            assert on_card(app) == (3, 6, chosen[2])       # ... which keeps the card: the sample still needs a decision
            assert "your relabel: L1 Irrelevant (gold_wrong)" in _visible(screen_text(app))
            await pilot.press("m")                         # mark steps: 1 correct, 2 incorrect, 3 correct, stop
            for key, step in (("y", 1), ("n", 2), ("y", 3)):
                assert isinstance(app.screen, MarkScreen) and f"step {step} of 5" in _visible(screen_text(app))
                await pilot.press(key)
            assert "step 4 of 5" in _visible(screen_text(app))
            await pilot.press("x")
            assert not isinstance(app.screen, MarkScreen)
            assert "✓ 1." in _visible(screen_text(app)) and "✗ 2." in _visible(screen_text(app))
            await pilot.press("a")
            assert on_card(app) == (4, 6, chosen[3])
            await pilot.press("e")                         # 4: edit in $EDITOR (the script rewrites the answer)
            assert on_card(app) == (5, 6, chosen[4])
            await pilot.press("n")                         # 5: a note, then skip
            assert isinstance(app.screen, NoteScreen)
            await pilot.press(*"size chart checked", "enter")
            assert on_card(app) == (5, 6, chosen[4])
            assert "note: size chart checked" in _visible(screen_text(app))
            await pilot.press("s")
            assert on_card(app) == (6, 6, chosen[5])
            await pilot.press("u")                         # undo the skip: back to item 5
            assert on_card(app) == (5, 6, chosen[4])
            assert "undid skip" in _visible(screen_text(app))
            await pilot.press("q")

    _run(first_sitting())
    summary = end_session(desk)
    assert (summary.reason, summary.store_busy) == ("quit", False)

    rows = store_rows(review_ws, "SELECT action, sample_id, reason, new_label, step_index, step_correct, note, "
                                 "edited_text, review_id FROM reviews WHERE annotator = 'alice' "
                                 "ORDER BY created_at, review_id")
    actions = [r[0] for r in rows]
    assert actions == ["accept", "reject", "relabel", "step", "step", "step", "accept", "edit", "note", "skip", "undo"]
    by_action = {r[0]: r for r in rows}
    assert by_action["reject"][1:3] == (chosen[1], "bad_reasoning")
    assert by_action["relabel"][1:4] == (chosen[2], "gold_wrong", "L1")
    assert [(r[4], r[5]) for r in rows if r[0] == "step"] == [(0, True), (1, False), (2, True)]
    parsed = parse_answer(by_action["edit"][7], BUILTIN_SCHEMES["taosr4"])
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

    # Resume: the unfinished items come back first, item 5 (its skip undone) then item 6; the last
    # decision empties the queue and the app closes by itself.
    desk = _desk(review_ws, "alice", queue, limit=6)
    app = ReviewApp(desk)

    async def second_sitting() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            assert on_card(app) == (1, 2, chosen[4])
            await pilot.press("a")
            assert on_card(app) == (2, 2, chosen[5])
            await pilot.press("r", "1")
            await pilot.pause()
            assert not app.is_running

    _run(second_sitting())
    assert end_session(desk).reason == "queue empty"
    decisions = dict(store_rows(review_ws, "SELECT sample_id, action FROM sample_decisions"))
    assert decisions == {chosen[0]: "accept", chosen[1]: "reject", chosen[2]: "accept", chosen[3]: "edit",
                         chosen[4]: "accept", chosen[5]: "reject"}

    # Exactly once: the journal and the store hold the same ids, none twice.
    journal = (review_ws / "reviews" / "journal" / "alice.jsonl").read_text().splitlines()
    journal_ids = Counter(json.loads(line)["review_id"] for line in journal)
    store_ids = Counter(r[0] for r in store_rows(review_ws, "SELECT review_id FROM reviews"))
    assert journal_ids == store_ids and max(store_ids.values()) == 1

    stats = cli("review", "stats", "-w", str(review_ws), "--json")
    alice = json.loads(stats.stdout)["annotators"][0]
    assert (alice["annotator"], alice["items"], alice["skipped"]) == ("alice", 6, 0)
    assert alice["accept_rate"] == 0.5 and alice["relabel_rate"] == round(1 / 6, 4)


def _pane_titles(lines: list[str]) -> dict[str, int]:
    """Screen row of each pane's title."""
    titles = ("reasoning", "model answer", "retrieved rules", "description")
    return {t: next(i for i, line in enumerate(lines) if re.search(rf"─ ?{t}", line)) for t in titles}


def test_the_card_fits_80x24_and_reflows_to_two_columns(review_ws: Path, tmp_path: Path) -> None:
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    sample = next(s for s in seed_samples(review_ws, per_pair=1) if s.parse_status == "ok")
    desk = _desk(review_ws, "dora", f"ids:{_ids_file(tmp_path, [sample.sample_id])}")
    item = desk.current
    app = ReviewApp(desk)
    shots: dict[tuple[int, int], list[str]] = {}

    async def look() -> None:
        async with app.run_test(size=SIZES[0]) as pilot:
            for size in SIZES:
                await pilot.resize_terminal(*size)
                await pilot.pause()
                shots[size] = screen_text(app)
                (tmp_path / f"card-{size[0]}x{size[1]}.svg").write_text(app.export_screenshot())
            await pilot.press("x")
            assert "unknown key 'x'" in _visible(screen_text(app))
            await pilot.press("A")                         # upper case does what lower case does: accept
            await pilot.pause()
            assert not app.is_running                      # the only item is done: the queue is empty

    _run(look())
    assert end_session(desk).reason == "queue empty"
    assert store_rows(review_ws, "SELECT sample_id, action FROM reviews WHERE annotator = 'dora'") == [
        (sample.sample_id, "accept")]
    for (width, height), lines in shots.items():
        text = _visible(lines)
        assert len(lines) == height
        # The header (one or two lines), then the pair, whole: query, title, gold label and source.
        assert "item 1 of 1" in lines[0]
        top = next(i for i, line in enumerate(lines) if line.startswith("query  "))
        assert top <= 2 and lines[top] == f"query  {item.query}"
        assert lines[top + 1] == f"title  {item.title}"
        assert lines[top + 2].startswith("gold   L") and f"pair {item.pair_id}" in lines[top + 2]
        # Every pane is there, no text is cut to an ellipsis, every key is in the footer.
        rows = _pane_titles(lines)
        assert "…" not in text
        assert re.sub(r"\s+", " ", lines[-1]).replace(" ", "") == "".join(KEYS).replace(" ", "")
        assert "1. Query understanding" in text and "P(L4)" in text and RULE_IDS[0] in text
        if width >= 110:  # two columns: the reasoning left, the answer right on the same row
            assert rows["reasoning"] == rows["model answer"] < rows["retrieved rules"] < rows["description"]
        else:  # stacked: reasoning, then answer | rules side by side, then the description
            assert rows["reasoning"] < rows["model answer"] == rows["retrieved rules"] < rows["description"]


@pytest.mark.slow  # loads the sentence-transformers embedder to build a real rule index
def test_rules_show_id_and_wrapped_title_and_g_shows_them_in_full(review_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.open(review_ws)
    docs = [d for d in load_documents(["builtin"]) if d.id in RULE_IDS]
    assert len(docs) == len(RULE_IDS)
    RuleIndex.build(docs, ws.indexes_dir / ws.config.index.name)
    sample = next(s for s in seed_samples(review_ws, per_pair=1) if s.parse_status == "ok")
    assert store_rows(review_ws, "SELECT rule_ids FROM samples WHERE sample_id = ?", [sample.sample_id]) == [
        (RULE_IDS,)]
    queue = f"ids:{_ids_file(tmp_path, [sample.sample_id])}"

    async def look(app: ReviewApp, size: tuple[int, int]) -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            assert on_card(app)[2] == sample.sample_id
            text = _visible(screen_text(app))
            assert RULE_IDS[0] in text and "…" not in text  # the first rule's id at every size, nothing cut
            if size[0] >= 200:  # wide: the rules pane holds each id and its whole title
                for doc in docs:
                    assert doc.id in text and doc.title in text
            await pilot.press("g")
            text = " ".join(" ".join(screen_text(app)).split())
            assert "guidelines · press g to go back" in text
            assert BUILTIN_SCHEMES["taosr4"].grades[0].meaning[:30] in text
            for doc in docs:
                assert doc.title[:30] in text
            await pilot.press("g")
            assert on_card(app)[2] == sample.sample_id
            await pilot.press("q")

    for size in SIZES:  # erin quits without deciding: each sitting resumes the same item
        desk = _desk(review_ws, "erin", queue)
        _run(look(ReviewApp(desk), size))
        end_session(desk)


def test_a_decision_the_journal_refuses_does_not_count(review_ws: Path, tmp_path: Path, monkeypatch) -> None:
    set_review_config(review_ws, overlap=0.0, gold_fraction=0.0)
    chosen = [s.sample_id for s in seed_samples(review_ws, per_pair=1) if s.parse_status == "ok"][:2]
    desk = _desk(review_ws, "fay", f"ids:{_ids_file(tmp_path, chosen)}")
    app = ReviewApp(desk)
    real_append = session_module.append_journal

    def disk_full(path: Path, reviews: list) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    async def sit() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            monkeypatch.setattr(session_module, "append_journal", disk_full)
            for keys in (["a"], ["r", "1"], ["m", "y"]):
                await pilot.press(*keys)
                await pilot.pause()
                assert on_card(app) == (1, 2, chosen[0])   # the card stays: nothing was decided
                assert "NOT saved: cannot write the review journal" in _visible(screen_text(app))
            monkeypatch.setattr(session_module, "append_journal", real_append)
            await pilot.press("a")
            assert on_card(app) == (2, 2, chosen[1])
            await pilot.press("q")

    _run(sit())
    end_session(desk)
    assert store_rows(review_ws, "SELECT sample_id, action FROM reviews WHERE annotator = 'fay'") == [
        (chosen[0], "accept")]
