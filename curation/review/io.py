"""Bulk decisions in and out: `cotgen review import FILE.jsonl` and `cotgen review export`.

An import is checked whole before anything is written (a bad line names its line and nothing lands), then
goes through the same journal-then-store path as the interactive review, as one write-once journal file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pydantic import ConfigDict, ValidationError

from curation.jsonl import json_objects
from curation.queries import sql
from curation.review.journal import (
    check_annotator,
    flush_into,
    gated_store,
    journal_dir,
    utc_now,
    write_import_journal,
)
from curation.store import Store, StoreBusy
from schemas.answer import parse_answer, render_answer
from schemas.errors import CotgenError, read_text, require_file
from schemas.labels import LabelScheme
from schemas.review import Review
from schemas.workspace import Workspace


class ImportRecord(Review):
    """One line of an import file: a Review whose id, time and (given a sample) pair may be left out."""

    model_config = ConfigDict(extra="forbid")

    review_id: str | None = None
    pair_id: str | None = None
    created_at: datetime | None = None


def normalize_edit(text: str, scheme: LabelScheme) -> str:
    """A corrected answer in schemas.answer format (steps and `Label: X`), or ValueError saying what is wrong."""
    parsed = parse_answer(text, scheme)
    if parsed.status != "ok" or not parsed.consistent or parsed.label is None:
        raise ValueError(parsed.reason or f"parse status {parsed.status}")
    first = next((line for line in text.splitlines() if line.strip()), "")
    order = "label_first" if first.strip().lower().startswith("label") else "cot_first"
    return render_answer(parsed.steps, parsed.label, order)


def _loc(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(line)"
    return f"{key}: {first['msg']}"


def read_records(path: Path) -> list[tuple[int, ImportRecord]]:
    """(line number, record) for every non-blank line; the first malformed line is a one-line error."""
    require_file(path)
    out = []
    for n, data in json_objects(path):
        try:
            out.append((n, ImportRecord.model_validate(data)))
        except ValidationError as e:
            raise CotgenError(f"{path}:{n}: {_loc(e)}") from None
    if not out:
        raise CotgenError(f"{path}: no records")
    return out


@dataclass
class ImportContext:
    """What validation looks up: the store's samples, pairs and reviews, the schemes and reason codes."""

    samples: dict[str, tuple[str, int | None]]
    pairs: dict[str, str]
    existing: dict[str, str]
    schemes: dict[str, LabelScheme]
    reject_reasons: dict[str, str]
    relabel_reasons: dict[str, str]


def _lookup(store: Store, records: list[tuple[int, ImportRecord]], ws: Workspace) -> ImportContext:
    sample_ids = sorted({r.sample_id for _, r in records if r.sample_id})
    samples = {s: (p, k) for s, p, k in store.rows(sql("review.samples_steps"), [sample_ids])}
    pair_ids = sorted({r.pair_id for _, r in records if r.pair_id} | {p for p, _ in samples.values()})
    pairs = dict(store.rows(sql("review.pairs_scheme"), [pair_ids]))
    ids = sorted({r.review_id for _, r in records if r.review_id} | {r.reason for _, r in records if r.action == "undo"})
    existing = dict(store.rows(sql("review.existing_ids"), [ids]))
    return ImportContext(samples=samples, pairs=pairs, existing=existing,
                         schemes={name: ws.config.scheme(name) for name in set(pairs.values())},
                         reject_reasons=ws.config.review.reject_reasons,
                         relabel_reasons=ws.config.review.relabel_reasons)


def _check(r: ImportRecord, ctx: ImportContext, earlier: dict[str, str]) -> ImportRecord:
    """The record with its pair filled in and its edit normalised; ValueError('field: reason') when wrong."""
    try:
        check_annotator(r.annotator)
    except CotgenError as e:
        raise ValueError(str(e)) from None
    pair_id = r.pair_id
    steps = None
    if r.sample_id is not None:
        if r.sample_id not in ctx.samples:
            raise ValueError(f"sample_id: '{r.sample_id}' is not a sample in the store")
        owner, steps = ctx.samples[r.sample_id]
        if pair_id is not None and pair_id != owner:
            raise ValueError(f"pair_id: '{pair_id}' but sample {r.sample_id} belongs to pair '{owner}'")
        pair_id = owner
    if pair_id is None:
        raise ValueError("pair_id: give a pair_id or a sample_id")
    if pair_id not in ctx.pairs:
        raise ValueError(f"pair_id: '{pair_id}' is not a pair in the store")
    scheme = ctx.schemes[ctx.pairs[pair_id]]
    if r.action in ("accept", "reject", "edit", "step") and r.sample_id is None:
        raise ValueError(f"sample_id: action '{r.action}' needs a sample")
    updates: dict[str, object] = {"pair_id": pair_id}
    if r.action == "reject" and r.reason not in ctx.reject_reasons:
        raise ValueError(f"reason: '{r.reason}' is not a reject reason ({', '.join(ctx.reject_reasons)})")
    if r.action == "relabel":
        if r.new_label not in scheme.ids:
            raise ValueError(f"new_label: '{r.new_label}' is not a grade of scheme {scheme.name} ({', '.join(scheme.ids)})")
        if r.reason not in ctx.relabel_reasons:
            raise ValueError(f"reason: '{r.reason}' is not a relabel reason ({', '.join(ctx.relabel_reasons)})")
    if r.action == "edit":
        if not r.edited_text:
            raise ValueError("edited_text: an edit needs the full corrected answer")
        try:
            updates["edited_text"] = normalize_edit(r.edited_text, scheme)
        except ValueError as e:
            raise ValueError(f"edited_text: not a complete answer ({e})") from None
    if r.action == "step":
        if r.step_index is None or r.step_correct is None:
            raise ValueError("step_index: a step mark needs step_index and step_correct")
        if r.step_index < 0 or (steps is not None and r.step_index >= steps):
            raise ValueError(f"step_index: {r.step_index} is outside the sample's {steps} steps (0-based)")
    if r.action == "note" and not r.note.strip():
        raise ValueError("note: empty note")
    if r.action == "undo":
        target = earlier.get(r.reason) or ctx.existing.get(r.reason)
        if target is None or target == "undo":
            raise ValueError(f"reason: an undo names the review_id it cancels; '{r.reason}' is no such decision")
    return r.model_copy(update=updates)


def _record_id(r: ImportRecord) -> str:
    """Stable id for a record without one, so importing the same file twice adds nothing."""
    canonical = json.dumps(r.model_dump(mode="json", exclude={"review_id", "created_at"}), sort_keys=True)
    return "imp-" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def validate(store: Store, path: Path, records: list[tuple[int, ImportRecord]], ws: Workspace) -> list[Review]:
    """Every record checked against the store before anything is written; the first bad one names its line."""
    ctx = _lookup(store, records, ws)
    base = utc_now()
    out: list[Review] = []
    earlier: dict[str, str] = {}
    for i, (n, rec) in enumerate(records):
        try:
            r = _check(rec, ctx, earlier)
        except ValueError as e:
            raise CotgenError(f"{path}:{n}: {e}") from None
        review_id = r.review_id or _record_id(r)
        if review_id in earlier:
            raise CotgenError(f"{path}:{n}: review_id: '{review_id}' appears twice in the file")
        earlier[review_id] = r.action
        # Lines without a time keep file order: a later line supersedes an earlier one.
        created = _utc(r.created_at) if r.created_at else base + timedelta(microseconds=i)
        out.append(Review.model_validate({**r.model_dump(), "review_id": review_id, "created_at": created}))
    return out


@dataclass
class ImportReport:
    path: str
    records: int
    inserted: int
    already_present: int
    journal: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def import_reviews(ws: Workspace, path: Path) -> ImportReport:
    """Validate the whole file, journal it as one write-once file, copy it into the store in one transaction."""
    records = read_records(path)
    try:
        with gated_store(ws) as store:
            reviews = validate(store, path, records, ws)
            key = hashlib.sha256(b"".join(r.model_dump_json().encode() for r in reviews)).hexdigest()[:16]
            before = len(store.rows(sql("review.existing_ids"), [[r.review_id for r in reviews]]))
            journal = None
            if before < len(reviews):
                journal = write_import_journal(journal_dir(ws), reviews, key)
            flush_into(store, journal_dir(ws))
    except StoreBusy as e:
        raise CotgenError(f"{path}: {e}; nothing was imported") from None
    return ImportReport(path=str(path), records=len(reviews), inserted=len(reviews) - before,
                        already_present=before, journal=str(journal) if journal else None)


def export_reviews(store: Store, live_only: bool = False) -> list[dict]:
    """Every decision (or only the live ones), oldest first, as import-ready dicts."""
    rows = store.query(sql("review.export_live" if live_only else "review.export_all"))
    return [json.loads(Review.model_validate(r).model_dump_json()) for r in rows]


def read_gold(path: Path) -> tuple[list[tuple[str, str, str]], list[int]]:
    """(pair_id, label, note) rows from a CSV with a header or a JSONL file, and the file line each starts on."""
    require_file(path)
    rows, lines = [], []
    if path.suffix == ".jsonl":
        for n, data in json_objects(path):
            if "pair_id" not in data or "label" not in data:
                raise CotgenError(f"{path}:{n}: expected {{\"pair_id\": ..., \"label\": ...}}")
            rows.append((str(data["pair_id"]), str(data["label"]), str(data.get("note", ""))))
            lines.append(n)
        return rows, lines
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    if not reader.fieldnames or not {"pair_id", "label"} <= set(reader.fieldnames):
        raise CotgenError(f"{path}:1: header: needs columns pair_id and label")
    start = reader.line_num + 1
    for row in reader:
        rows.append((row["pair_id"].strip(), row["label"].strip(), (row.get("note") or "").strip()))
        lines.append(start)
        start = reader.line_num + 1  # a quoted field may span lines: the next row starts after this one
    return rows, lines
