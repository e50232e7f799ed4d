"""Exported dataset versions: list, show, diff, and their registry in the store's dataset_versions."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from curation.queries import sql
from curation.store import Store
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError

MANIFEST = "manifest.json"
SPLITS_FILE = "splits.parquet"
CHANGES = ("added", "removed", "changed", "unchanged")
# Columns that hold what a model reads or writes; a change anywhere else is metadata (label, stage, ids, ...).
TEXT_COLUMNS = ("prompt", "completion", "reasoning_content", "chosen", "rejected", "completions")



def version_dirs(datasets_dir: Path, name: str) -> list[Path]:
    """Published versions of `name`, oldest first (a version exists once its manifest does)."""
    return [datasets_dir / name / f"v{v}" for v in DatasetRef(name).versions(datasets_dir)]


def latest_version(datasets_dir: Path, name: str) -> Path | None:
    found = version_dirs(datasets_dir, name)
    return found[-1] if found else None


def read_manifest(version_dir: Path) -> dict[str, Any]:
    path = version_dir / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CotgenError(f"{path}: cannot read the manifest: {e}") from None


def dataset_names(datasets_dir: Path) -> list[str]:
    if not datasets_dir.is_dir():
        return []
    return sorted(p.name for p in datasets_dir.iterdir() if p.is_dir() and version_dirs(datasets_dir, p.name))


def _created_at(manifest: dict[str, Any]) -> datetime:
    try:
        stamp = datetime.fromisoformat(str(manifest.get("created_at")))
    except ValueError:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    return stamp.astimezone(timezone.utc).replace(tzinfo=None) if stamp.tzinfo else stamp


def register_versions(store: Store, datasets_dir: Path, name: str) -> list[int]:
    """Insert the versions of `name` on disk that dataset_versions lacks (the disk is the truth: a version
    is published by its rename, so an export stopped before registering is caught up here)."""
    known = {v for (v,) in store.rows(sql("datasets.registered"), {"name": name})}
    added = []
    with store.transaction() as con:
        for path in version_dirs(datasets_dir, name):
            version = int(path.name[1:])
            if version in known:
                continue
            manifest = read_manifest(path)
            con.execute(sql("datasets.register"), {
                "name": name, "version": version, "content_hash": manifest.get("content_hash", ""),
                "parent": manifest.get("parent"), "path": str(path.relative_to(datasets_dir.parent)),
                "manifest": json.dumps(manifest, default=str), "created_at": _created_at(manifest),
            })
            added.append(version)
    return added


def _summary(path: Path, manifest: dict[str, Any], registered: bool | None) -> dict[str, Any]:
    counts = manifest.get("counts", {})
    return {
        "name": manifest.get("name", path.parent.name), "version": int(path.name[1:]),
        "parent": manifest.get("parent"), "content_hash": manifest.get("content_hash", ""),
        "created_at": manifest.get("created_at"), "format": manifest.get("format"),
        "rows": {kind: sum(splits.values()) for kind, splits in counts.items()},
        "path": str(path), "registered": registered,
    }


def list_versions(datasets_dir: Path, store: Store | None = None) -> list[dict[str, Any]]:
    """Every published version on disk; `registered` says whether dataset_versions has it (None: no store)."""
    out = []
    for name in dataset_names(datasets_dir):
        known = {v for (v,) in store.rows(sql("datasets.registered"), {"name": name})} if store else None
        for path in version_dirs(datasets_dir, name):
            out.append(_summary(path, read_manifest(path), None if known is None else int(path.name[1:]) in known))
    return out


def show_version(datasets_dir: Path, ref: DatasetRef) -> dict[str, Any]:
    """A version's manifest with its path (the latest version when the reference names none)."""
    path = ref.resolve(datasets_dir)
    return {**read_manifest(path), "path": str(path)}


def _parquet_files(version_dir: Path, kind: str) -> list[str]:
    return sorted(str(p) for p in (version_dir / "data" / kind).glob("*.parquet"))


def diff_versions(datasets_dir: Path, name: str, a: int, b: int, examples: int = 10) -> dict[str, Any]:
    """Per kind, pair ids added, removed, changed and unchanged going from version a to version b (`more`: ids
    beyond the examples); for changed pairs, which columns changed and how many changed text or only metadata."""
    dirs = {v: DatasetRef(name, v).resolve(datasets_dir) for v in (a, b)}
    kinds = sorted({p.name for d in dirs.values() for p in (d / "data").glob("*") if p.is_dir()})
    con = duckdb.connect()
    try:
        out: dict[str, Any] = {}
        for kind in kinds:
            for side, v in (("a", a), ("b", b)):
                files = _parquet_files(dirs[v], kind)
                for query, table in (("digests", f"digests_{side}"), ("cells", f"cells_{side}")):
                    if files:
                        con.execute(sql(f"datasets.{query}").format(table=table), {"files": files})
                    else:
                        con.execute(sql(f"datasets.empty_{query}").format(table=table))
            result: dict[str, Any] = {c: {"pairs": 0, "examples": [], "more": 0} for c in CHANGES}
            for change, pairs, sample in con.execute(sql("datasets.diff"), {"examples": examples}).fetchall():
                result[change] = {"pairs": int(pairs), "examples": list(sample), "more": int(pairs) - len(sample)}
            con.execute(sql("datasets.changed_cells"), {"text_columns": list(TEXT_COLUMNS)})
            text, metadata_only = con.execute(sql("datasets.change_kinds")).fetchone()
            result["changed"].update(text=int(text), metadata_only=int(metadata_only),
                                     columns={c: int(n) for c, n in con.execute(sql("datasets.changed_columns")).fetchall()})
            out[kind] = result
        return {"name": name, "from": a, "to": b, "kinds": out}
    finally:
        con.close()
