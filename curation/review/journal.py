"""The one write path for decisions: a durable journal first, then the store.

DuckDB lets one process write the file at a time, and `cotgen generate` and every annotator share it.
So a decision is first appended and fsynced to a journal file under the workspace (it counts from then on),
then copied into `reviews` by a short write transaction that also advances the journal's byte offset.
Copies are idempotent by review_id, so a crash between the two steps neither loses nor repeats a row.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
from pydantic import ValidationError

from curation.queries import sql
from curation.store import Store, StoreBusy
from schemas.errors import CotgenError
from schemas.review import Review
from schemas.workspace import Workspace

JOURNAL_SUBDIR = Path("reviews") / "journal"
IMPORT_PREFIX = "import-"
# Store raises CotgenError for a held lock; this is the part of its message that says so.
ANNOTATOR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

REVIEW_COLUMNS = ("review_id", "annotator", "action", "pair_id", "sample_id", "step_index", "step_correct",
                  "reason", "new_label", "edited_text", "note", "seconds", "created_at")
BATCH_SCHEMA = pa.schema([
    ("review_id", pa.string()), ("annotator", pa.string()), ("action", pa.string()), ("pair_id", pa.string()),
    ("sample_id", pa.string()), ("step_index", pa.int32()), ("step_correct", pa.bool_()), ("reason", pa.string()),
    ("new_label", pa.string()), ("edited_text", pa.string()), ("note", pa.string()), ("seconds", pa.float64()),
    ("created_at", pa.timestamp("us")), ("seq", pa.int64()),
])
_GATE = threading.RLock()  # one store connection per process at a time: DuckDB refuses mixed configurations


def check_annotator(name: str) -> str:
    """Annotator names become journal file names: letters, digits and _.@- only."""
    if not ANNOTATOR_RE.fullmatch(name) or name.startswith(IMPORT_PREFIX):
        raise CotgenError(f"annotator: '{name}' is not a valid name (letters, digits and _.@-, at most 64, "
                          f"not starting with '{IMPORT_PREFIX}')")
    return name


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_review(annotator: str, action: str, pair_id: str, **fields: object) -> Review:
    """A decision with a fresh unique id and the current UTC time."""
    return Review(review_id=uuid.uuid4().hex, annotator=annotator, action=action, pair_id=pair_id,
                  created_at=utc_now(), **fields)


def journal_dir(ws: Workspace) -> Path:
    return ws.root / JOURNAL_SUBDIR


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(reviews: list[Review]) -> bytes:
    return "".join(r.model_dump_json() + "\n" for r in reviews).encode("utf-8")


def append_journal(path: Path, reviews: list[Review]) -> None:
    """Append and fsync under an exclusive lock; when this returns the decisions are durable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    data = _encode(reviews)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn last line (crash mid-write) must not swallow this entry
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def write_import_journal(folder: Path, reviews: list[Review], content_key: str) -> Path:
    """A write-once journal for a bulk import: it appears whole (rename) or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{IMPORT_PREFIX}{content_key}.jsonl"
    if final.exists():
        return final  # the same content was imported before; its entries are idempotent anyway
    staged = folder / f".{final.name}.tmp"
    with open(staged, "wb") as fh:
        fh.write(_encode(reviews))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(staged, final)
    _fsync_dir(folder)
    return final


@dataclass
class FlushReport:
    """What one flush copied; `busy` means the store was locked and everything is still in the journal."""

    inserted: int = 0
    already_present: int = 0
    bad_lines: list[str] = field(default_factory=list)
    busy: bool = False


def _read_new(path: Path, start: int) -> tuple[bytes, int]:
    """Complete lines after `start`, read under a shared lock so no append is seen half-written."""
    with open(path, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        size = os.fstat(fh.fileno()).st_size
        if size < start:  # the file was replaced: read it again from the top (ids keep it idempotent)
            start = 0
        fh.seek(start)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    return data[:end], start + end


def _parse_lines(name: str, data: bytes, bad: list[str]) -> list[Review]:
    out = []
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            out.append(Review.model_validate_json(line))
        except ValidationError as e:
            # Only a line whose append never returned (power loss) can be unreadable: it was never acknowledged.
            bad.append(f"{name}: unreadable entry {i + 1} after the last flush: {str(e).splitlines()[0]}")
    return out


def _batch_table(reviews: list[Review]) -> pa.Table:
    cols: dict[str, list] = {c: [getattr(r, c) for r in reviews] for c in REVIEW_COLUMNS}
    cols["seq"] = list(range(len(reviews)))
    return pa.Table.from_pydict(cols, schema=BATCH_SCHEMA)


def flush_into(store: Store, folder: Path) -> FlushReport:
    """Copy every journal entry not yet in the store, in one transaction with the new offsets."""
    report = FlushReport()
    if not folder.is_dir():
        return report
    with store.transaction() as con:
        offsets = dict(store.rows(sql("review.journal_offsets")))
        batch: list[Review] = []
        moved: dict[str, int] = {}
        for path in sorted(folder.glob("*.jsonl")):
            start = offsets.get(path.name, 0)
            if path.stat().st_size == start:
                continue
            data, end = _read_new(path, start)
            batch.extend(_parse_lines(path.name, data, report.bad_lines))
            moved[path.name] = end
        if batch:
            before = store.scalar(sql("review.count_reviews"))
            con.register("review_batch", _batch_table(batch))
            try:
                con.execute(sql("review.insert_batch"))
            finally:
                con.unregister("review_batch")
            report.inserted = store.scalar(sql("review.count_reviews")) - before
            report.already_present = len(batch) - report.inserted
        for name, end in moved.items():
            con.execute(sql("review.set_offset"), [name, end])
    return report


@contextmanager
def gated_store(ws: Workspace, *, read_only: bool = False, timeout_s: float | None = None) -> Iterator[Store]:
    """A short-lived store connection, one at a time in this process (threads share the gate)."""
    timeout = ws.config.store.lock_timeout_s if timeout_s is None else timeout_s
    with _GATE, Store(ws.store_path, read_only=read_only, lock_timeout_s=timeout) as store:
        yield store


def flush_workspace(ws: Workspace, timeout_s: float | None = None) -> FlushReport:
    """Flush the workspace's journals; a store held past `timeout_s` gives busy=True, nothing lost."""
    folder = journal_dir(ws)
    if not folder.is_dir():
        return FlushReport()
    try:
        with gated_store(ws, timeout_s=timeout_s) as store:
            return flush_into(store, folder)
    except StoreBusy:
        return FlushReport(busy=True)


class BackgroundStore:
    """A session's store visits, off the UI thread: copy the journal and run queued jobs (claims ahead).

    One short connection per visit, at most one visit per `min_interval_s` for journal copies (decisions are
    already durable, so batching them costs nothing and keeps the single-writer lock free for others).
    Each visit tries the lock once and backs off when it is held, so `cotgen generate` and other writers,
    which wait on the lock, get in first.
    """

    def __init__(self, ws: Workspace, min_interval_s: float = 2.0, timeout_s: float = 0.0, max_retry_s: float = 2.0):
        self.ws = ws
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._max_retry_s = max_retry_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._dirty = False
        self._jobs: list[Callable[[Store], None]] = []
        self._last_visit = 0.0
        self.inserted = 0
        self.bad_lines: list[str] = []
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="review-store", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """New entries are in the journal: copy them on the next visit."""
        with self._lock:
            self._dirty = True
        self._wake.set()

    def submit(self, job: Callable[[Store], None]) -> None:
        """Run `job` with a write connection on the next visit (soon, not waiting for the copy interval)."""
        with self._lock:
            self._jobs.append(job)
        self._wake.set()

    def _due(self) -> float | None:
        """Seconds until the next visit is due; None when there is nothing to do."""
        with self._lock:
            if self._jobs:
                return 0.0
            if not self._dirty:
                return None
        return max(0.0, self._last_visit + self._min_interval_s - time.monotonic())

    def _visit(self) -> bool:
        with self._lock:
            jobs, self._jobs = self._jobs, []
            dirty, self._dirty = self._dirty, False
        try:
            with gated_store(self.ws, timeout_s=self._timeout_s) as store:
                if dirty:
                    report = flush_into(store, journal_dir(self.ws))
                    self.inserted += report.inserted
                    self.bad_lines.extend(report.bad_lines)
                for job in jobs:
                    job(store)
        except CotgenError as e:  # busy or broken: keep the work for the next visit, say why if it is not busy
            self.error = None if isinstance(e, StoreBusy) else str(e)
            with self._lock:
                self._jobs = jobs + self._jobs
                self._dirty = self._dirty or dirty
            return False
        finally:
            self._last_visit = time.monotonic()
        self.error = None
        return True

    def _loop(self) -> None:
        backoff, retry_at = 0.0, 0.0
        while not self._stop.is_set():
            due = self._due()
            delay = None if due is None else max(due, retry_at - time.monotonic())
            if delay is None or delay > 0:
                self._wake.wait(timeout=delay)
                self._wake.clear()
                continue
            if self._visit():
                backoff, retry_at = 0.0, 0.0
            else:
                backoff = min(max(2 * backoff, 0.25), self._max_retry_s)
                retry_at = time.monotonic() + backoff

    def close(self) -> FlushReport:
        """Stop the thread, then copy what is left, waiting up to store.lock_timeout_s for the lock."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        report = flush_workspace(self.ws)
        self.inserted += report.inserted
        self.bad_lines.extend(report.bad_lines)
        return report
