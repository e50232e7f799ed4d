"""`cotgen ingest` and `cotgen status`: signatures and rendering; the use cases live in cotgen.app.ingest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from cotgen.app.ingest import IngestStageResult, cli_source, ingest_file, ingest_sources, store_status
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, merge_overrides, open_workspace, table
from cotgen.commands.progress import ProgressDisplay
from curation.ingest import IngestReport, parse_column_map
from schemas.errors import CotgenError


def print_report(r: IngestReport) -> None:
    if r.same_file_as:
        return  # said by the notice: nothing was read
    rows = [
        ["rows read", r.rows_read], ["pairs added", r.added], ["already in store", r.already_present],
        ["duplicate rows collapsed", r.duplicates], ["pairs with conflicting labels", r.conflicts],
        ["rows rejected", r.rejected],
        *([["NUL bytes removed", r.nul_bytes_removed]] if r.nul_bytes_removed else []),
    ]
    console.print(f"[bold]{r.source}[/]: {r.path}", highlight=False, soft_wrap=True)  # a path is never broken
    console.print(table("ingest", ["", "count"], rows))
    total = sum(r.labels.values()) or 1
    console.print(table(f"labels added ({r.scheme})", ["label", "pairs", "share"],
                        [[g, n, f"{n / total:.1%}"] for g, n in r.labels.items()]))
    if r.rejects_path:
        console.print(f"[yellow]{r.rejected} rejected rows written to {r.rejects_path}[/]", soft_wrap=True)


def render_ingest(result: IngestStageResult) -> None:
    """The `ingest` stage of `cotgen run`, shown like `cotgen ingest`."""
    for r in result.reports:
        print_report(r)


def ingest_command(
    path: Annotated[Path | None, typer.Argument(help="File to ingest (CSV/TSV/Parquet/JSONL), a directory or glob of Parquet shards, or a saved HF dataset. Omit it to ingest every configured source.")] = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Source name (a sources entry in cotgen.toml, or a new name for PATH).")] = None,
    scheme: Annotated[str | None, typer.Option("--scheme", help="Label scheme of the raw labels.")] = None,
    column_map: Annotated[str | None, typer.Option("--map", help="Column mapping, e.g. query=search_term, title=product_title, label=grade, id=row_id.")] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Text encoding, e.g. latin-1.")] = None,
    fmt: Annotated[Literal["csv", "tsv", "parquet", "jsonl", "hf"] | None, typer.Option("--format", help="Default: from the path (hf: a directory saved by datasets' save_to_disk).")] = None,
    split: Annotated[str | None, typer.Option("--split", help="A saved DatasetDict: ingest only this split (default: all).")] = None,
    strip_html: Annotated[bool | None, typer.Option("--strip-html/--keep-html", help="Strip tags and decode entities.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Send bad rows to a rejects file instead of stopping.")] = False,
    as_new_source: Annotated[bool, typer.Option("--as-new-source", help="Ingest a file already in the store under another source name again, as this source.")] = False,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Add labelled pairs to the store. Re-ingesting a file adds nothing; a bad row stops with file:row: field: reason.

    Columns not mapped are detected from common headers (the mapping is printed).

    A new file is recorded as a source in cotgen.toml, so `cotgen run` ingests it too.
    """
    ws = open_workspace(workspace)
    recorded = None
    with ProgressDisplay(quiet=as_json) as show:
        if path is None and source is None:
            if not ws.config.sources:
                raise CotgenError("no sources configured in cotgen.toml; pass a PATH")
            reports = ingest_sources(ws, ws.config.sources, skip_bad, as_new_source=as_new_source, report=show)
            payload = [r.to_dict() for r in reports]
        else:
            base = cli_source(ws, path, source)
            src = merge_overrides(
                base, "ingest", path=os.path.realpath(path) if path else None, scheme=scheme, encoding=encoding,
                format=fmt, split=split, strip_html=strip_html, skip_bad=skip_bad or None,
                columns=parse_column_map(column_map, base.columns),
            )
            done = ingest_file(ws, src, skip_bad, as_new_source=as_new_source, report=show)
            reports, payload, recorded = [done.report], [done.to_dict()], done.recorded_in
    if as_json:
        emit_json(payload)
        return
    for r in reports:
        print_report(r)
    if recorded:
        console.print(f"recorded as source '{reports[0].source}' in {recorded} (`cotgen run` ingests it)",
                      soft_wrap=True)


def status_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Pairs by source and label, runs, samples, reviews and dataset versions."""
    status = store_status(open_workspace(workspace))
    if as_json:
        emit_json(status)
        return
    console.print(table("pairs", ["source", "scheme", "label", "pairs"],
                        [[r["source"], r["scheme"], r["label"], r["pairs"]] for r in status["pairs"]], whole=("source",)))
    if status["disagreements"]:
        console.print(f"pairs with conflicting labels: {status['disagreements']:,}")
    console.print(table("runs", ["run", "role", "status", "samples", "model"],
                        [[r["name"], f"{r['role']}, gold shown" if r["gold_shown"] else r["role"], r["status"],
                          r["samples"], r["model"]] for r in status["runs"]],
                        whole=("run", "model")))
    console.print(table("reviews", ["annotator", "decisions"], [[r["annotator"], r["decisions"]] for r in status["reviews"]]))
    console.print(table("datasets", ["name", "version", "hash"],
                        [[r["name"], f"v{r['version']}", r["content_hash"][:12]] for r in status["datasets"]],
                        whole=("name", "version", "hash")))
