"""Queues and claims on a real store: what each queue selects, sharing across annotators, overlap, gold, resume."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import helpers_review
import pytest
from helpers_review import seed_samples, set_review_config

from curation.review.journal import check_annotator, utc_now
from curation.review.queue import ClaimContext, add_gold, check_ids, claim, claimable, parse_queue, unfinished
from curation.store import Store
from schemas.config import ReviewConfig
from schemas.errors import CotgenError
from schemas.workspace import Workspace

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws


def _ctx(annotator: str, queue: str = "random", gamma: float = 0.5, **cfg: float) -> ClaimContext:
    config = ReviewConfig(**{"overlap": 0.0, "gold_fraction": 0.0, **cfg})
    return ClaimContext(annotator=annotator, spec=parse_queue(queue), config=config, seed=0, gamma=gamma)


def _store(ws: Path) -> Store:
    return Store(Workspace.open(ws).store_path)


def _all(store: Store, ctx: ClaimContext) -> list[str]:
    return claim(store, ctx, 100_000, utc_now())


@pytest.fixture
def seeded(review_ws: Path) -> tuple[Path, list]:
    return review_ws, seed_samples(review_ws, per_pair=4)


def test_each_queue_selects_what_it_names(seeded) -> None:
    ws, samples = seeded
    per_pair = Counter(s.pair_id for s in samples if s.predicted == s.gold)
    n = Counter(s.pair_id for s in samples)
    expected = {
        "disagreements": {s.sample_id for s in samples if s.predicted is not None and s.predicted != s.gold},
        "parse-failures": {s.sample_id for s in samples if s.parse_status != "ok"},
        "contradictions": {s.sample_id for s in samples if not s.consistent},
        "random": {s.sample_id for s in samples},
        # TaoSR1's hard bin: 0 < c <= gamma * n
        "hard": {s.sample_id for s in samples if 0 < per_pair[s.pair_id] <= 0.5 * n[s.pair_id]},
    }
    assert all(expected.values()), "the seeded store should exercise every queue"
    with _store(ws) as store:
        for i, (queue, want) in enumerate(expected.items()):
            store.con.execute("DELETE FROM review_assignments")  # each queue judged on its own
            ctx = _ctx(f"a{i}", queue)
            assert claimable(store, ctx, utc_now()) == len(want)
            got = _all(store, ctx)
            assert set(got) == want and len(got) == len(want), queue


def test_annotators_get_disjoint_items_unless_overlap(seeded) -> None:
    ws, samples = seeded
    with _store(ws) as store:
        a = _all(store, _ctx("alice"))
        b = _all(store, _ctx("bob"))
        assert len(a) == len(samples) and b == []
    with _store(ws) as store:
        store.con.execute("DELETE FROM review_assignments")
        a = set(_all(store, _ctx("alice", overlap=0.3)))
        b = set(_all(store, _ctx("bob", overlap=0.3)))
        c = set(_all(store, _ctx("carol", overlap=0.3)))
        overlap = {k for k, o in store.rows("SELECT item_key, overlap FROM review_assignments") if o}
    assert a == {s.sample_id for s in samples}
    assert b == overlap and not c          # overlap items go to exactly two annotators
    assert 0.15 < len(overlap) / len(samples) < 0.45


def test_claims_are_ordered_by_query_and_resume_in_order(seeded) -> None:
    ws, _ = seeded
    with _store(ws) as store:
        ctx = _ctx("alice", "disagreements")
        first = claim(store, ctx, 5, utc_now())
        assert unfinished(store, ctx) == first
        store.con.execute("INSERT INTO reviews (review_id, annotator, action, pair_id, sample_id, created_at) "
                          "SELECT 'r1', 'alice', 'accept', pair_id, sample_id, now() FROM samples WHERE sample_id = ?",
                          [first[0]])
        assert unfinished(store, ctx) == first[1:]
        assert unfinished(store, _ctx("alice", "hard")) == []  # resume is per queue


def test_skip_and_expiry_release_a_claim(seeded) -> None:
    ws, _ = seeded
    with _store(ws) as store:
        alice = _ctx("alice")
        held = claim(store, alice, 3, utc_now())
        store.con.execute("INSERT INTO reviews (review_id, annotator, action, pair_id, sample_id, created_at) "
                          "SELECT 'skip-1', 'alice', 'skip', pair_id, sample_id, now() FROM samples WHERE sample_id = ?",
                          [held[0]])
        bob = _all(store, _ctx("bob"))
        assert held[0] in bob and not set(held[1:]) & set(bob)
        later = utc_now() + timedelta(minutes=ReviewConfig().claim_expiry_minutes + 1)
        carol = claim(store, _ctx("carol"), 100_000, later)  # alice's untouched claims expired, bob's too
        assert set(held[1:]) <= set(carol)


def test_gold_items_are_mixed_in_at_the_configured_share(seeded) -> None:
    ws, samples = seeded
    w = Workspace.open(ws)
    gold_pairs = sorted({s.pair_id for s in samples})[:10]
    with _store(ws) as store:
        add_gold(store, [(p, "L1", "") for p in gold_pairs], "lead", {"taosr4": ["L4", "L3", "L2", "L1"]}, "gold.csv")
        ctx = _ctx("alice", "contradictions", gold_fraction=0.25)
        keys = claim(store, ctx, 8, utc_now())
        rows = store.rows("SELECT item_key, pair_id, gold, position FROM review_assignments ORDER BY position")
    assert [r[0] for r in rows] == keys and len(keys) == 8
    gold = [r for r in rows if r[2]]
    assert len(gold) == 2 and {r[1] for r in gold} <= set(gold_pairs)
    assert not rows[0][2] and not rows[-1][2]  # spread through the batch, not at an edge
    with pytest.raises(CotgenError, match=r"gold.csv:2: label: 'L9' is not a grade"), Store(w.store_path) as store:
        add_gold(store, [(gold_pairs[0], "L1", ""), (gold_pairs[1], "L9", "")], "lead",
                 {"taosr4": ["L4", "L3", "L2", "L1"]}, "gold.csv")


def test_ids_queue_checks_every_line(seeded, tmp_path: Path) -> None:
    ws, samples = seeded
    path = tmp_path / "ids.txt"
    path.write_text(f"{samples[5].sample_id}\n\n{samples[0].pair_id}\nnot-an-id\n", encoding="utf-8")
    spec = parse_queue(f"ids:{path}")
    with _store(ws) as store:
        with pytest.raises(CotgenError, match=r"ids.txt:4: id: 'not-an-id' is neither"):
            check_ids(store, spec)
        path.write_text(f"# one sample, then a pair\n{samples[5].sample_id}\n{samples[0].pair_id}\n", encoding="utf-8")
        spec = parse_queue(f"ids:{path}")
        check_ids(store, spec)
        keys = claim(store, ClaimContext("alice", spec, ReviewConfig(overlap=0, gold_fraction=0), 0, 0.5), 50,
                     utc_now())
    # file order, then a pair's samples by index (seed_samples writes pairs in order, 4 samples each)
    assert samples[5].pair_id != samples[0].pair_id
    assert keys == [samples[5].sample_id] + [s.sample_id for s in samples[:4]]


def test_unknown_queue_and_bad_config(tmp_path: Path) -> None:
    with pytest.raises(CotgenError, match="unknown queue 'easy'"):
        parse_queue("easy")
    with pytest.raises(CotgenError, match="'../etc' is not a valid name"):
        check_annotator("../etc")  # names become journal file names
    with pytest.raises(ValueError, match="1 to 9 reason codes"):
        ReviewConfig(reject_reasons={str(i): "x" for i in range(10)})
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "cotgen.toml").write_text("")
    set_review_config(ws, overlap=1.5)
    with pytest.raises(CotgenError, match=r"review.overlap: Input should be less than or equal to 1"):
        Workspace.open(ws)
