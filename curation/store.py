"""The workspace's DuckDB file: opening with a lock wait, forward migrations, transactions."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from curation import queries
from schemas.errors import CotgenError
from schemas.workspace import Workspace

MIGRATIONS = "sql/migrations"
_LOCK_HINTS = ("Could not set lock", "Conflicting lock")
_DAMAGE_HINTS = ("not a valid DuckDB database", "Could not read enough bytes", "checksum", "Corrupt")
_IO_HINTS = ("Could not write", "No space left", "Read-only file system")


class StoreBusy(CotgenError):
    """Another process holds the store's write lock for longer than we were willing to wait."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every shipped migration, in order."""
    folder = resources.files("curation").joinpath(MIGRATIONS)
    found = []
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _is_lock_error(err: Exception) -> bool:
    return any(h in str(err) for h in _LOCK_HINTS)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _damaged(err: Exception) -> bool:
    return any(h in str(err) for h in _DAMAGE_HINTS)


def _io_failure(err: Exception) -> bool:
    """A write the file system refused (full disk, read-only mount), as DuckDB reports it."""
    return isinstance(err, duckdb.IOException) or any(h in str(err) for h in _IO_HINTS)


def _lock_holder(err: Exception) -> str:
    m = re.search(r"PID (\d+)", str(err))
    return f" (held by process {m.group(1)})" if m else ""


class Store:
    """One open connection to the store; use as a context manager so the lock is released."""

    def __init__(self, path: Path, *, read_only: bool = False, lock_timeout_s: float = 30.0,
                 memory_limit: str | None = None):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise CotgenError(f"{self.path}: no store yet; run `cotgen ingest` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.config = {"memory_limit": memory_limit} if memory_limit else {}
        self.con = self._connect(lock_timeout_s)
        try:
            self._check_intact()
            if not read_only:
                self.migrate()
            elif self._behind():
                self._upgrade(lock_timeout_s)
        except duckdb.Error as e:
            self.con.close()
            if not (_io_failure(e) or _damaged(e)):
                raise  # a migration's own mistake keeps its traceback
            raise self._open_error(e) from None
        except BaseException:
            self.con.close()
            raise

    def _behind(self) -> bool:
        """A cotgen store (it has migrations on record) that lacks some this cotgen ships."""
        applied = self.applied_versions()
        return bool(applied) and bool({v for v, _, _ in migrations()} - applied)

    def _upgrade(self, lock_timeout_s: float) -> None:
        """Apply the missing migrations in a short write, then reopen read-only: readers expect today's tables."""
        self.con.close()
        Store(self.path, lock_timeout_s=lock_timeout_s, memory_limit=self.config.get("memory_limit")).close()
        self.con = self._connect(lock_timeout_s)

    def _open_error(self, err: Exception) -> CotgenError:
        if _damaged(err):
            return CotgenError(f"{self.path}: not a cotgen store or damaged ({_first_line(err)})")
        return CotgenError(f"{self.path}: cannot open the store: {_first_line(err)}")

    def _check_intact(self) -> None:
        """A file too short for the blocks it has in use was cut (a partial copy, a disk that filled up)."""
        if self.path.with_name(self.path.name + ".wal").exists():
            return  # blocks replayed from the log are not in the file yet
        # Free blocks may lie past the end of an intact file; blocks in use may not.
        block_size, used = self.one(queries.sql("store.database_size"))
        if self.path.stat().st_size < block_size * used:
            raise CotgenError(f"{self.path}: not a cotgen store or damaged (cut short: "
                              f"{self.path.stat().st_size:,} bytes cannot hold its {used} blocks in use)")

    def _connect(self, lock_timeout_s: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only, config=self.config)
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise self._open_error(e) from None
                if time.monotonic() >= deadline:
                    raise StoreBusy(
                        f"{self.path}: the store is in use by another cotgen process{_lock_holder(e)}; "
                        f"waited {lock_timeout_s:g}s (store.lock_timeout_s). Try again when it finishes."
                    ) from None
                # A short, jittered retry keeps waiting processes from sleeping through a free lock.
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 0.2)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: on any exception the writes inside are rolled back."""
        self.con.begin()
        try:
            yield self.con
        except duckdb.Error as e:
            if not _io_failure(e):
                self.con.rollback()
                raise
            with contextlib.suppress(duckdb.Error):
                self.con.rollback()
            raise CotgenError(f"{self.path}: {_first_line(e)}; nothing was saved") from None
        except BaseException:
            self.con.rollback()
            raise
        try:
            self.con.commit()
        except duckdb.Error as e:
            if not _io_failure(e):
                raise
            raise CotgenError(f"{self.path}: could not save ({_first_line(e)}); nothing was saved") from None

    def applied_versions(self) -> set[int]:
        exists = self.scalar(queries.sql("store.has_schema_version"))
        return {r[0] for r in self.rows(queries.sql("store.applied_versions"))} if exists else set()

    def schema_version(self) -> int:
        return max(self.applied_versions(), default=0)

    def migrate(self) -> None:
        """Apply every shipped migration the store lacks, in order, each in its own transaction."""
        applied = self.applied_versions()
        shipped = migrations()
        newest = max((v for v, _, _ in shipped), default=0)
        if applied and max(applied) > newest:
            raise CotgenError(f"{self.path}: store schema v{max(applied)} is newer than this cotgen (v{newest}); upgrade cotgen")
        for version, name, sql in shipped:
            if version in applied:
                continue
            with self.transaction() as con:
                con.execute(queries.sql("store.create_schema_version"))
                con.execute(sql)
                con.execute(queries.sql("store.record_migration"), [version, name])

    # DuckDB 2 refuses new work on a connection while a result is half-read (fetchone on a
    # multi-row result), so every read below fetches to the end.
    def rows(self, sql: str, params: list | dict | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def one(self, sql: str, params: list | dict | None = None) -> tuple | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: list | dict | None = None):
        row = self.one(sql, params)
        return row[0] if row else None

    def query(self, sql: str, params: list | dict | None = None) -> list[dict]:
        """Rows as dicts; for small result sets (status, summaries)."""
        cur = self.con.execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def open_store(workspace: Workspace, *, read_only: bool = False) -> Store:
    """The workspace's store, waiting up to store.lock_timeout_s for another process's lock."""
    cfg = workspace.config.store
    return Store(workspace.store_path, read_only=read_only, lock_timeout_s=cfg.lock_timeout_s,
                 memory_limit=cfg.memory_limit)


@contextmanager
def registered(store: Store, name: str, table: Any) -> Iterator[None]:
    """An Arrow table visible to SQL under `name` for the duration of the block (registered outside any
    transaction: after a failed statement a transaction refuses all work, unregistering included)."""
    store.con.register(name, table)
    try:
        yield
    finally:
        store.con.unregister(name)
