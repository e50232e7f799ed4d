"""Review use cases: a sitting's decisions (the desk behind the card), import, export, gold and stats.

Every decision goes through curation.review.journal: fsynced to the annotator's journal first (it counts from
then on), then copied into the store by a background thread with short write transactions, so annotators,
`cotgen generate` and `status` share the single-writer DuckDB file without losing or blocking each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cotgen.app.index import load_index
from cotgen.app.progress import Notice, Reporter, silent
from curation.outputs import write_text_atomic
from curation.queries import sql
from curation.review.card import RuleText
from curation.review.io import ImportReport, export_reviews, import_reviews, normalize_edit, read_gold
from curation.review.journal import (
    BackgroundStore,
    FlushReport,
    check_annotator,
    flush_workspace,
    gated_store,
    journal_dir,
)
from curation.review.queue import QueueSpec, ReviewItem, add_gold, parse_queue
from curation.review.session import ItemView, Session, open_session
from curation.review.stats import review_stats
from schemas.answer import render_answer
from schemas.config import ReviewConfig
from schemas.errors import CotgenError
from schemas.labels import LabelScheme
from schemas.workspace import Workspace

NOT_DECISIONS = ("undo", "note", "step")  # journal entries that are not a decision on an item


class RuleBook:
    """Rule titles and texts from the workspace's checked rule index, loaded on first use; ids alone without it."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.error = ""

    @cached_property
    def _index(self):
        try:
            return load_index(self.ws)
        except (ImportError, CotgenError) as e:
            self.error = str(e)
            return None

    def texts(self, rule_ids: list[str]) -> list[RuleText]:
        if not rule_ids:
            return []
        index = self._index
        out = []
        for rid in rule_ids:
            try:
                rule = index.get(rid) if index is not None else None
            except CotgenError:
                rule = None
            out.append(RuleText(id=rid, title=rule.title, text=rule.text) if rule else RuleText(id=rid))
        return out


def queue_spec(annotator: str, queue: str, run: str | None, limit: int | None) -> QueueSpec:
    """Check the annotator name, the limit and the queue before anything opens the store."""
    check_annotator(annotator)
    if limit is not None and limit < 1:
        raise CotgenError("--limit: give a positive number of items")
    return parse_queue(queue, run)


class ReviewDesk:
    """One sitting's decisions on the current card; each method records through the session and says what it did.

    A method that writes raises OSError when the journal cannot be written (the decision then does not count).
    """

    def __init__(self, ws: Workspace, session: Session, queue: str, worker: BackgroundStore, rules: RuleBook):
        self.ws = ws
        self.session = session
        self.queue = queue
        self.worker = worker
        self.rules = rules
        self.drafts: dict[str, str] = {}  # an edit that did not parse comes back in the editor

    @property
    def cfg(self) -> ReviewConfig:
        return self.ws.config.review

    @property
    def current(self) -> ReviewItem | None:
        return self.session.current

    def view(self) -> ItemView:
        return self.session.view(self.session.current)

    def scheme(self) -> LabelScheme:
        return self.ws.config.scheme(self.session.current.scheme)

    def store_error(self) -> str | None:
        """Why the background copy into the store fails, if it does (decisions stay safe in the journal)."""
        return self.worker.error

    def needs_sample(self, what: str) -> str | None:
        """The message when the current card has no sample to act on, else None."""
        if self.session.current.sample_id is None:
            return f"nothing to {what}: this card is the pair alone (accept, relabel, note or skip)"
        return None

    def accept(self) -> str:
        self.session.decide("accept")
        return "accepted"

    def reject(self, code: str) -> str:
        self.session.decide("reject", reason=code)
        return f"rejected ({code})"

    def relabel(self, grade: str, code: str) -> str:
        self.session.decide("relabel", new_label=grade, reason=code)
        return f"relabelled to {grade} ({code})"

    def answer_text(self) -> str:
        """What the editor opens: a draft that did not parse, else this annotator's edit, else the model's answer."""
        item = self.session.current
        view = self.session.view(item)
        if item.item_key in self.drafts:
            return self.drafts[item.item_key]
        if view.edit is not None and view.edit.edited_text:
            return view.edit.edited_text
        if item.steps and item.predicted_label:
            return render_answer(item.steps, item.predicted_label, item.answer_order)
        return item.raw_text

    def save_edit(self, before: str, edited: str | None) -> str:
        """Record an edited answer when it changed and parses; keep it as a draft when it does not parse."""
        if edited is None:
            return "editor failed: nothing saved"
        if edited.strip() == before.strip():
            return "edit: no change"
        key = self.session.current.item_key
        try:
            text = normalize_edit(edited, self.scheme())
        except ValueError as e:
            self.drafts[key] = edited
            return f"edit not saved: {e}; press e to fix it"
        self.drafts.pop(key, None)
        self.session.decide("edit", edited_text=text)
        return "edited"

    def mark(self, step_index: int, correct: bool) -> None:
        self.session.decide("step", step_index=step_index, step_correct=correct)

    def note(self, text: str) -> str:
        text = text.strip()
        if text:
            self.session.decide("note", note=text)
        return "note saved" if text else "note cancelled"

    def skip(self) -> str:
        self.session.decide("skip")
        return "skipped"

    def undo(self) -> str:
        undone = self.session.undo()
        return f"undid {undone.action} on {undone.sample_id or undone.pair_id}" if undone else "nothing to undo"


def start_session(ws: Workspace, annotator: str, spec: QueueSpec, limit: int | None) -> ReviewDesk:
    """Flush earlier journals, resume this annotator's unfinished items, claim more; close it with `end_session`."""
    session, worker = open_session(ws, annotator, spec, limit)
    return ReviewDesk(ws, session, spec.key, worker, RuleBook(ws))


@dataclass(frozen=True)
class SessionSummary:
    """How a sitting ended: decisions made, journal entries written, and whether the store took them all."""

    reason: str
    decisions: int
    entries: int
    store_busy: bool
    journal: Path
    bad_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "journal": str(self.journal)}


def end_session(desk: ReviewDesk) -> SessionSummary:
    """Stop the background worker and copy what is left into the store (waiting up to store.lock_timeout_s)."""
    report = desk.worker.close()
    session = desk.session
    return SessionSummary(
        reason="queue empty" if session.current is None else "quit",
        decisions=sum(1 for r in session.written if r.action not in NOT_DECISIONS),
        entries=len(session.written), store_busy=report.busy,
        journal=journal_dir(desk.ws) / f"{session.annotator}.jsonl", bad_lines=list(desk.worker.bad_lines))


def _flush_first(ws: Workspace, report: Reporter) -> None:
    flushed: FlushReport = flush_workspace(ws)
    if flushed.busy:
        report(Notice("the store is busy: figures leave out decisions still in the journal", level="warning"))


def stats(ws: Workspace, report: Reporter = silent) -> dict:
    """Per-annotator figures and agreement, after copying what journals hold into the store."""
    _flush_first(ws, report)
    with gated_store(ws, read_only=True) as store:
        return review_stats(store)


def import_decisions(ws: Workspace, path: Path) -> ImportReport:
    """Check a JSONL file of decisions whole, then journal and store it (a bad line imports nothing)."""
    return import_reviews(ws, path)


@dataclass(frozen=True)
class ExportResult:
    """Decisions exported, and the file written (None: the caller prints the rows)."""

    rows: list[dict]
    path: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "reviews": len(self.rows)}


def export_decisions(ws: Workspace, output: Path | None, live: bool, report: Reporter = silent) -> ExportResult:
    """Every decision (or only the live ones), oldest first; written atomically as JSONL when `output` is given."""
    _flush_first(ws, report)
    with gated_store(ws, read_only=True) as store:
        rows = export_reviews(store, live_only=live)
    if output is not None:
        for folder in write_text_atomic(output, "".join(json.dumps(r) + "\n" for r in rows)):
            report(Notice(f"created the folder {folder}"))
    return ExportResult(rows=rows, path=output)


@dataclass(frozen=True)
class GoldResult:
    added: int
    gold_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "gold_pairs": self.gold_pairs}


def add_gold_pairs(ws: Workspace, path: Path, added_by: str) -> GoldResult:
    """Mark the pairs of a CSV/JSONL file as gold with their trusted labels (checked before any write)."""
    rows, lines = read_gold(path)
    schemes = {name: ws.config.scheme(name).ids for name in ws.config.known_schemes()}
    with gated_store(ws) as store:
        n = add_gold(store, rows, added_by, schemes, str(path), lines)
        total = store.scalar(sql("review.gold_count"))
    return GoldResult(added=n, gold_pairs=total)
