"""One annotator's sitting: claimed items, decisions, undo, progress, and the store work behind it. No terminal I/O."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from curation.queries import sql
from curation.review.journal import (
    BackgroundStore,
    append_journal,
    flush_workspace,
    gated_store,
    journal_dir,
    new_review,
    utc_now,
)
from curation.review.queue import (
    PAIR_PREFIX,
    ClaimContext,
    QueueSpec,
    ReviewItem,
    check_ids,
    claim,
    claimable,
    load_items,
    unfinished,
)
from curation.store import Store
from schemas.errors import CotgenError
from schemas.review import Review
from schemas.workspace import Workspace

COMPLETING = frozenset({"accept", "reject", "edit", "skip"})
CHUNK = 20  # items claimed per store visit: small enough that idle claims do not starve other annotators


def item_key_of(review: Review) -> str:
    return review.sample_id or f"{PAIR_PREFIX}{review.pair_id}"


def completes(review: Review) -> bool:
    """Does this decision finish its item? (A relabel finishes a pair shown without a sample.)"""
    return review.action in COMPLETING or (review.action == "relabel" and review.sample_id is None)


def live(history: list[Review]) -> list[Review]:
    """Decisions not undone, in order; mirrors the live_reviews view."""
    undone = {r.reason for r in history if r.action == "undo"}
    return [r for r in history if r.action != "undo" and r.review_id not in undone]


@dataclass
class ItemView:
    """What this annotator has said about one item so far (latest live of each kind)."""

    decision: Review | None = None
    relabel: Review | None = None
    edit: Review | None = None
    marks: dict[int, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Progress:
    position: int
    total: int
    done: int
    median_s: float | None
    per_hour: float | None


class Session:
    """The items of one sitting and this annotator's decisions on them; `record` makes a decision durable."""

    def __init__(self, annotator: str, items: list[ReviewItem], history: list[Review],
                 record: Callable[[Review], None], fetch_more: Callable[[int], list[ReviewItem]],
                 target: int, limit: int | None = None, chunk: int = 20,
                 prefetch: Callable[[int], None] | None = None, low_water: int = 5,
                 clock: Callable[[], float] = time.monotonic):
        self.annotator = annotator
        self.items = list(items)
        self.history = list(history)
        self._record = record
        self._fetch_more = fetch_more
        self.target = max(target, len(self.items))
        self.limit = limit
        self.chunk = chunk
        self._prefetch = prefetch
        self._low_water = low_water
        self._clock = clock
        self._started = clock()
        self._shown_at = self._started
        self.written: list[Review] = []
        self.cursor: int | None = None
        self._cache: tuple[dict[str, list[Review]], dict[str, Review]] | None = None
        self._advance()

    @property
    def current(self) -> ReviewItem | None:
        return None if self.cursor is None else self.items[self.cursor]

    def _index(self) -> tuple[dict[str, list[Review]], dict[str, Review]]:
        """Live decisions by item and latest live relabel by pair; rebuilt only after a new decision."""
        if self._cache is None:
            by_item: dict[str, list[Review]] = defaultdict(list)
            relabels: dict[str, Review] = {}
            for r in live(self.history):
                by_item[item_key_of(r)].append(r)
                if r.action == "relabel":
                    relabels[r.pair_id] = r
            self._cache = (by_item, relabels)
        return self._cache

    def view(self, item: ReviewItem) -> ItemView:
        by_item, relabels = self._index()
        v = ItemView(relabel=relabels.get(item.pair_id))
        for r in by_item.get(item.item_key, []):
            if r.action in COMPLETING:
                v.decision = r
            if r.action == "edit":
                v.edit = r
            if r.action == "step" and r.step_index is not None:
                v.marks[r.step_index] = bool(r.step_correct)
            if r.action == "note" and r.note:
                v.notes.append(r.note)
        if item.sample_id is None and v.decision is None and v.relabel is not None:
            v.decision = v.relabel
        return v

    def is_done(self, item: ReviewItem) -> bool:
        return any(completes(r) for r in self._index()[0].get(item.item_key, []))

    def _room(self) -> int:
        return self.chunk if self.limit is None else min(self.chunk, self.limit - len(self.items))

    def _advance(self) -> None:
        while True:
            pending = [i for i, it in enumerate(self.items) if not self.is_done(it)]
            if pending:
                self._move(pending[0])
                if len(pending) <= self._low_water and self._prefetch is not None and self._room() > 0:
                    self._prefetch(self._room())  # claim ahead in the background: the UI never waits for it
                return
            room = self._room()
            more = self._fetch_more(room) if room > 0 else []
            known = {it.item_key for it in self.items}
            more = [it for it in more if it.item_key not in known][: max(room, 0)]
            if not more:
                self.target = len(self.items)
                self.cursor = None
                return
            self.items.extend(more)
            self.target = max(self.target, len(self.items))

    def _move(self, index: int) -> None:
        if index != self.cursor:
            self._shown_at = self._clock()
        self.cursor = index

    def decide(self, action: str, **fields: object) -> Review:
        """Record one decision on the current item; a finishing decision moves to the next unfinished item."""
        item = self.current
        if item is None:
            raise RuntimeError("no current item")
        seconds = round(self._clock() - self._shown_at, 3)
        review = new_review(self.annotator, action, item.pair_id, sample_id=item.sample_id, seconds=seconds,
                            **fields)
        self._append(review)
        if completes(review):
            self._advance()
        return review

    def _append(self, review: Review) -> None:
        self._record(review)  # durable first: if the journal write fails, the decision does not count
        self.history.append(review)
        self.written.append(review)
        self._cache = None

    def undo(self) -> Review | None:
        """Cancel this annotator's latest live decision and go back to its item; None when nothing is left."""
        decisions = live(self.history)
        if not decisions:
            return None
        target = decisions[-1]
        self._append(new_review(self.annotator, "undo", target.pair_id, sample_id=target.sample_id,
                                reason=target.review_id))
        key = item_key_of(target)
        index = next((i for i, it in enumerate(self.items) if it.item_key == key), None)
        if index is not None:
            self._move(index)
        elif self.cursor is None:
            self._advance()
        return target

    def progress(self) -> Progress:
        done = sum(1 for it in self.items if self.is_done(it))
        undone = {r.reason for r in self.history if r.action == "undo"}
        times = [r.seconds for r in self.written
                 if completes(r) and r.review_id not in undone and r.seconds is not None]
        elapsed = self._clock() - self._started
        position = (self.cursor + 1) if self.cursor is not None else len(self.items)
        return Progress(position=position, total=max(self.target, len(self.items)), done=done,
                        median_s=statistics.median(times) if times else None,
                        per_hour=(len(times) * 3600 / elapsed) if times and elapsed > 0 else None)


def load_history(store: Store, annotator: str) -> list[Review]:
    """Every decision of this annotator in the store, undo rows included, oldest first."""
    return [Review.model_validate(r) for r in store.query(sql("review.history"), [annotator])]


class ClaimAhead:
    """Items claimed by the background store worker before the session runs out, handed over on demand."""

    def __init__(self, ws: Workspace, ctx: ClaimContext, worker: BackgroundStore):
        self.ws = ws
        self.ctx = ctx
        self.worker = worker
        self._lock = threading.Lock()
        self._ready: list[ReviewItem] = []
        self._asked = False

    def _claim(self, store: Store, n: int) -> list[ReviewItem]:
        return load_items(store, self.ctx.annotator, claim(store, self.ctx, n, utc_now()))

    def request(self, n: int) -> None:
        """Claim n more on the worker's next visit (one request at a time)."""
        with self._lock:
            if self._asked or self._ready:
                return
            self._asked = True

        def job(store: Store) -> None:
            items = self._claim(store, n)
            with self._lock:
                self._ready.extend(items)
                self._asked = False

        self.worker.submit(job)

    def take(self, n: int) -> list[ReviewItem]:
        """What the worker claimed ahead, else a claim right now (the session has nothing left to show)."""
        with self._lock:
            ready, self._ready = self._ready, []
        if ready:
            return ready
        with gated_store(self.ws) as store:
            return self._claim(store, n)


def open_session(ws: Workspace, annotator: str, spec: QueueSpec, limit: int | None) -> tuple[Session, BackgroundStore]:
    """Flush what earlier sessions left in journals, resume this annotator's unfinished items, claim more.

    Returns the session and the background worker that copies its decisions into the store (close it at the end).
    """
    first = flush_workspace(ws)
    if first.busy:
        raise CotgenError(f"{ws.store_path}: the store stayed busy for {ws.config.store.lock_timeout_s:g}s "
                          f"(store.lock_timeout_s); try again when the other command finishes")
    ctx = ClaimContext(annotator=annotator, spec=spec, config=ws.config.review, seed=ws.config.curation.seed,
                       gamma=ws.config.curation.difficulty.gamma)
    with gated_store(ws) as store:
        check_ids(store, spec)
        keys = unfinished(store, ctx)
        target = len(keys) + claimable(store, ctx, utc_now())
        if limit is not None:
            keys = keys[:limit]
            target = min(target, limit)
        items = load_items(store, annotator, keys)
        history = load_history(store, annotator)
    journal = journal_dir(ws) / f"{annotator}.jsonl"
    worker = BackgroundStore(ws)
    ahead = ClaimAhead(ws, ctx, worker)

    def record(review: Review) -> None:
        append_journal(journal, [review])
        worker.kick()

    session = Session(annotator, items, history, record, ahead.take, target=target, limit=limit, chunk=CHUNK,
                      prefetch=ahead.request)
    return session, worker
