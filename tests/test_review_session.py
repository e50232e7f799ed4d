"""The session logic behind the card, on items claimed from a real store: pairs alone, undo, progress, claim-ahead."""

from __future__ import annotations

from pathlib import Path

import helpers_review
from helpers_review import seed_samples

from curation.review.journal import append_journal, flush_workspace, journal_dir, utc_now
from curation.review.queue import ClaimContext, claim, load_items, parse_queue
from curation.review.session import Session, live
from curation.store import Store
from schemas.config import ReviewConfig
from schemas.review import Review
from schemas.workspace import Workspace

from conftest import store_rows

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _session(ws: Path, ids: list[str], tmp: Path, **kw) -> tuple[Session, list[Review], list[int]]:
    w = Workspace.open(ws)
    path = tmp / "ids.txt"
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    ctx = ClaimContext("alice", parse_queue(f"ids:{path}"), ReviewConfig(overlap=0, gold_fraction=0), 0, 0.5)
    written: list[Review] = []
    asked: list[int] = []

    def record(r: Review) -> None:
        append_journal(journal_dir(w) / "alice.jsonl", [r])
        written.append(r)

    def fetch(n: int):
        with Store(w.store_path) as store:
            return load_items(store, "alice", claim(store, ctx, n, utc_now()))

    session = Session("alice", [], [], record, fetch, target=len(ids), chunk=2, prefetch=asked.append, low_water=1,
                      **kw)
    return session, written, asked


def test_pairs_alone_undo_and_progress(review_ws: Path, tmp_path: Path) -> None:
    samples = seed_samples(review_ws, per_pair=1, pairs_limit=3)
    with Store(Workspace.open(review_ws).store_path, read_only=True) as store:
        bare = store.scalar("SELECT pair_id FROM pairs WHERE pair_id NOT IN (SELECT pair_id FROM samples) "
                            "ORDER BY pair_id LIMIT 1")
    clock = Clock()
    s, written, asked = _session(review_ws, [samples[0].sample_id, bare, samples[1].sample_id], tmp_path,
                                 clock=clock)
    assert [it.item_key for it in s.items] == [samples[0].sample_id, f"pair:{bare}"]  # chunk of 2
    assert asked == []
    clock.t = 4.0
    s.decide("note", note="check the brand")
    s.decide("accept")
    assert s.current.item_key == f"pair:{bare}" and s.current.sample_id is None
    assert asked == [2]  # one item left in hand: claim ahead
    assert written[-1].seconds == 4.0
    clock.t = 10.0
    s.decide("relabel", new_label="L2", reason="gold_wrong")  # a relabel finishes a pair shown alone
    assert s.view(s.items[1]).decision.action == "relabel"
    assert s.current.item_key == samples[1].sample_id  # fetched when the list ran out
    p = s.progress()
    assert (p.position, p.total, p.done, p.median_s) == (3, 3, 2, 5.0)

    undone = s.undo()
    assert undone.action == "relabel" and s.current.item_key == f"pair:{bare}"
    assert written[-1].action == "undo" and written[-1].reason == undone.review_id
    assert [r.action for r in live(written)] == ["note", "accept"]
    s.decide("skip")
    s.decide("reject", reason="wrong_label")
    assert s.current is None and s.progress().done == 3

    report = flush_workspace(Workspace.open(review_ws))
    assert report.inserted == len(written) == 6
    assert store_rows(review_ws, "SELECT count(*) FROM pair_relabels") == [(0,)]


def test_resume_history_marks_and_limit(review_ws: Path, tmp_path: Path) -> None:
    samples = [s for s in seed_samples(review_ws, per_pair=1) if s.parse_status == "ok"][:4]
    s, written, _ = _session(review_ws, [x.sample_id for x in samples], tmp_path, limit=3)
    s.decide("step", step_index=0, step_correct=True)
    s.decide("step", step_index=0, step_correct=False)   # a later mark supersedes
    s.decide("step", step_index=2, step_correct=True)
    assert s.view(s.current).marks == {0: False, 2: True}
    s.decide("edit", edited_text="Label: L1")
    s.decide("accept")
    s.decide("accept")
    assert s.current is None and len(s.items) == 3  # --limit 3
    # A new sitting with the same history continues from there: undo reaches back to the last accept.
    s2 = Session("alice", s.items, written, lambda r: written.append(r), lambda n: [], target=3, limit=3)
    assert s2.current is None
    last = written[-1]
    assert last.action == "accept" and s2.undo().review_id == last.review_id
    assert s2.current.item_key == samples[2].sample_id
