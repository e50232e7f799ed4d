"""`cotgen ingest` and `cotgen status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace, table
from curation.ingest import IngestReport, ingest, parse_column_map
from curation.status import workspace_status
from curation.store import open_store
from schemas.config import SourceConfig
from schemas.errors import CotgenError
from schemas.workspace import Workspace


def ingest_sources(ws: Workspace, sources: list[SourceConfig], skip_bad: bool) -> list[IngestReport]:
    """Ingest each source in its own transaction; the store lock is held only while ingesting."""
    reports = []
    with open_store(ws) as store:
        for src in sources:
            resolved = src.model_copy(update={"path": str(ws.path(src.path))})
            reports.append(ingest(store, resolved, ws.config.scheme(src.scheme), skip_bad=skip_bad,
                                  rejects_dir=ws.rejects_dir))
    return reports


def print_report(r: IngestReport) -> None:
    rows = [
        ["rows read", r.rows_read], ["pairs added", r.added], ["already in store", r.already_present],
        ["duplicate rows collapsed", r.duplicates], ["pairs with conflicting labels", r.conflicts],
        ["rows rejected", r.rejected],
    ]
    console.print(table(f"{r.source}: {r.path}", ["", "count"], rows))
    total = sum(r.labels.values()) or 1
    console.print(table(f"labels added ({r.scheme})", ["label", "pairs", "share"],
                        [[g, n, f"{n / total:.1%}"] for g, n in r.labels.items()]))
    if r.rejects_path:
        console.print(f"[yellow]{r.rejected} rejected rows written to {r.rejects_path}[/]")


def ingest_command(
    path: Annotated[Path | None, typer.Argument(help="File to ingest (CSV/TSV/Parquet/JSONL). Omit it to ingest every configured source.")] = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Source name (a sources entry in cotgen.toml, or a new name for PATH).")] = None,
    scheme: Annotated[str | None, typer.Option("--scheme", help="Label scheme of the raw labels.")] = None,
    column_map: Annotated[str | None, typer.Option("--map", help="Column mapping, e.g. query=search_term,title=product_title,label=grade,id=row_id.")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Text encoding, e.g. latin-1.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv | tsv | parquet | jsonl (default: from the extension).")] = None,
    strip_html: Annotated[bool | None, typer.Option("--strip-html/--keep-html", help="Strip tags and decode entities.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Send bad rows to a rejects file instead of stopping.")] = False,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Add labelled pairs to the store. Re-ingesting a file adds nothing; a bad row stops with file:row: field: reason."""
    ws = open_workspace(workspace)
    if path is None and source is None:
        if not ws.config.sources:
            raise CotgenError("no sources configured in cotgen.toml; pass a PATH")
        sources = ws.config.sources
    else:
        known = {s.name: s for s in ws.config.sources}
        name = source or (path.stem if path else "")
        if path is None and name not in known:
            raise CotgenError(f"unknown source '{name}'; configured: {', '.join(known) or 'none'}")
        base = known.get(name) or SourceConfig(name=name, path=str(path))
        overrides = {k: v for k, v in {
            "path": str(path.resolve()) if path else None, "scheme": scheme, "encoding": encoding,
            "format": fmt, "strip_html": strip_html,
        }.items() if v is not None}
        overrides["columns"] = parse_column_map(column_map, base.columns)
        sources = [SourceConfig.model_validate({**base.model_dump(), **overrides})]
        ws.config.scheme(sources[0].scheme)
    reports = ingest_sources(ws, sources, skip_bad)
    if as_json:
        emit_json([r.to_dict() for r in reports])
        return
    for r in reports:
        print_report(r)


def status_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Pairs by source and label, runs, samples, reviews and dataset versions."""
    ws = open_workspace(workspace)
    if not ws.store_path.exists():
        raise CotgenError(f"{ws.store_path}: no store yet; run `cotgen ingest` first")
    with open_store(ws, read_only=True) as store:
        status = workspace_status(store)
    if as_json:
        emit_json(status)
        return
    console.print(table("pairs", ["source", "scheme", "label", "pairs"],
                        [[r["source"], r["scheme"], r["label"], r["pairs"]] for r in status["pairs"]]))
    if status["disagreements"]:
        console.print(f"pairs with conflicting labels: {status['disagreements']:,}")
    console.print(table("runs", ["run", "role", "model", "status", "samples"],
                        [[r["name"], r["role"], r["model"], r["status"], r["samples"]] for r in status["runs"]]))
    console.print(table("reviews", ["annotator", "decisions"], [[r["annotator"], r["decisions"]] for r in status["reviews"]]))
    console.print(table("datasets", ["name", "version", "hash"],
                        [[r["name"], f"v{r['version']}", r["content_hash"][:12]] for r in status["datasets"]]))


class IngestStage:
    name = "ingest"

    def run(self, ws: Workspace) -> dict:
        if not ws.config.sources:
            raise CotgenError("stage ingest: no [[sources]] in cotgen.toml")
        reports = ingest_sources(ws, ws.config.sources, skip_bad=False)
        for r in reports:
            print_report(r)
        return {"added": sum(r.added for r in reports), "sources": len(reports)}


STAGES = [IngestStage()]
