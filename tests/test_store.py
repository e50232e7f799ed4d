"""The DuckDB store: forward migrations, schema version, transactions."""

from pathlib import Path

import duckdb
import pytest

from curation import store as store_module
from curation.store import Store, migrations
from schemas.errors import CotgenError


def test_fresh_store_has_every_table_and_the_latest_version(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        assert store.schema_version() == migrations()[-1][0]
        tables = {r[0] for r in store.rows("SELECT table_name FROM information_schema.tables")}
    assert {"pairs", "runs", "completions", "samples", "reviews", "dataset_versions", "gold_pairs"} <= tables


def test_migrations_apply_forward_from_an_older_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "old.duckdb"
    shipped = migrations()
    monkeypatch.setattr(store_module, "migrations", lambda: shipped[:1])
    with Store(path) as store:
        assert store.schema_version() == shipped[0][0]
        store.con.execute("INSERT INTO pairs VALUES ('p1', 's', 'q1', 'mug', 'Blue Mug', '', NULL, '4', 'L4', "
                          "'taosr4', 'i1', 2)")
    monkeypatch.undo()
    with Store(path) as store:
        assert store.schema_version() == shipped[-1][0]
        assert store.rows("SELECT pair_id, label FROM gold_pairs") == [("p1", "L4")]


def test_newer_store_than_code_is_refused(tmp_path: Path):
    path = tmp_path / "new.duckdb"
    with Store(path) as store:
        store.con.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(CotgenError, match="newer than this cotgen"):
        Store(path)


def test_transaction_rolls_back_on_error(tmp_path: Path):
    with Store(tmp_path / "t.duckdb") as store:
        with pytest.raises(RuntimeError), store.transaction() as con:
            con.execute("INSERT INTO reviews (review_id, annotator, action, pair_id, created_at) "
                        "VALUES ('r1', 'ann', 'accept', 'p1', now())")
            raise RuntimeError("crash mid-batch")
        assert store.scalar("SELECT count(*) FROM reviews") == 0


def test_read_only_store_must_exist(tmp_path: Path):
    with pytest.raises(CotgenError, match="no store yet"):
        Store(tmp_path / "missing.duckdb", read_only=True)


def test_read_only_open_of_an_older_store_applies_the_missing_migrations_first(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """After an upgrade, a read-only command (status, export) must not meet a store without today's tables."""
    path = tmp_path / "old.duckdb"
    shipped = migrations()
    monkeypatch.setattr(store_module, "migrations", lambda: shipped[:-1])
    Store(path).close()
    monkeypatch.undo()
    with Store(path, read_only=True) as store:
        assert store.schema_version() == shipped[-1][0]
        with pytest.raises(duckdb.Error):  # and the connection it hands back is read-only again
            store.con.execute("CREATE TABLE scratch (a INTEGER)")
