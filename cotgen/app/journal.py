"""An append-only journal of a run's answers: each is on disk as it arrives, before the store has it.

A SIGKILL then loses at most the requests in flight: the next start copies what the journal holds into
the store (`replay`). Lines are written with one `write` each (a killed process loses none that
returned) and fsync'd in small groups by a helper thread (a machine crash loses at most a group; the
backend's event loop never waits on the disk). A failed write or sync (disk full, read-only) is a
one-line CotgenError; the caller stops sending at once.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.errors import CotgenError

FSYNC_LINES = 32
FSYNC_S = 0.5


class Journal:
    """One run's journal file, appended from the backend's thread."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._unsynced = 0
        self._failed: OSError | None = None
        self._wake = threading.Event()
        self._closed = threading.Event()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise self._error(e) from None
        self._syncer = threading.Thread(target=self._sync_loop, name="cotgen-journal-sync", daemon=True)
        self._syncer.start()

    def _error(self, e: OSError) -> CotgenError:
        return CotgenError(f"cannot write the run journal {self.path}: {e.strerror or e}; stopped sending "
                           "(answers received so far are kept; free space or fix the folder, then run again)")

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise CotgenError(f"the run journal {self.path} is closed")
            if self._failed is not None:
                raise self._error(self._failed)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as e:
                raise self._error(e) from None
            self._unsynced += 1
            if self._unsynced >= FSYNC_LINES:
                self._wake.set()

    def _sync_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(FSYNC_S)
            self._wake.clear()
            self._sync()

    def _sync(self) -> None:
        with self._lock:
            fd, pending, self._unsynced = self._fd, self._unsynced, 0
        if fd is None or not pending:
            return
        try:
            os.fsync(fd)
        except OSError as e:
            self._failed = e

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._syncer.join()
        self._sync()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if self._failed is not None:
            raise self._error(self._failed)

    def remove(self) -> None:
        """Delete the journal once the store holds everything in it."""
        self.close()
        self.path.unlink(missing_ok=True)


def journal_path(ws_root: Path, kind: str, run_id: str) -> Path:
    """Where a run's answers (`kind`: generate, judge) are journaled until the store has them."""
    return ws_root / "journal" / f"{kind}-{run_id}.jsonl"


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a journal; a line cut by a crash mid-write is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue
