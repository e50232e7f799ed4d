"""Ingest use cases: add labelled pairs from the configured sources or a file named on the command line; status."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotgen.app.progress import Notice, Reporter, silent
from cotgen.app.workspace import record_source
from curation.ingest import IngestReport, ingest
from curation.status import workspace_status
from curation.store import open_store
from schemas.config import SourceConfig
from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES
from schemas.workspace import Workspace


def _same_file_notice(r: IngestReport) -> Notice:
    return Notice(f"{r.path}: this content is already in the store as source '{r.same_file_as}'; nothing added "
                  f"(pass --as-new-source to ingest it again as '{r.source}')", "warning")


def ingest_sources(ws: Workspace, sources: list[SourceConfig], skip_bad: bool = False, *,
                   as_new_source: bool = False, report: Reporter = silent) -> list[IngestReport]:
    """Ingest each source in its own transaction; the store lock is held only while ingesting."""
    reports = []
    with open_store(ws) as store:
        for src in sources:
            resolved = src.model_copy(update={"path": str(ws.path(src.path))})
            r = ingest(store, resolved, ws.config.scheme(src.scheme), skip_bad=skip_bad or src.skip_bad,
                       rejects_dir=ws.rejects_dir, as_new_source=as_new_source,
                       schemes={**BUILTIN_SCHEMES, **ws.config.schemes})
            if r.same_file_as:
                report(_same_file_notice(r))
            elif r.detected:
                mapping = ", ".join(f"{k} <- {v}" for k, v in r.columns.items() if k != "attributes")
                report(Notice(f"{r.source}: columns: {mapping} (detected from the headers; --map changes it)"))
            reports.append(r)
    return reports


def cli_source(ws: Workspace, path: Path | None, name: str | None) -> SourceConfig:
    """The source a command line names: a configured one (by --source), or a new one for PATH (named by its stem)."""
    known = {s.name: s for s in ws.config.sources}
    if name is None and path is not None:
        named = path
        while set("*?[") & set(named.name):  # a glob: named after the folder it searches
            named = named.parent
        name = named.stem
    name = name or ""
    if path is None and name not in known:
        raise CotgenError(f"unknown source '{name}'; configured: {', '.join(known) or 'none'}")
    return known.get(name) or SourceConfig(name=name, path=str(path))


@dataclass
class FileIngest:
    """A command-line ingest: its report, and the cotgen.toml it was recorded in (None: already configured)."""

    report: IngestReport
    recorded_in: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "recorded_in": str(self.recorded_in) if self.recorded_in else None}


def ingest_file(ws: Workspace, source: SourceConfig, skip_bad: bool = False, *, as_new_source: bool = False,
                report: Reporter = silent) -> FileIngest:
    """Ingest one source given on the command line; a new source is recorded in cotgen.toml so `cotgen run` has it."""
    ws.config.scheme(source.scheme)
    [r] = ingest_sources(ws, [source], skip_bad, as_new_source=as_new_source, report=report)
    if r.same_file_as or any(s.name == source.name for s in ws.config.sources):
        return FileIngest(r)
    return FileIngest(r, record_source(ws, source.model_copy(update={"columns": r.column_map()})))


def store_status(ws: Workspace) -> dict[str, Any]:
    """Pairs by source and label, runs, samples, reviews and dataset versions."""
    if not ws.store_path.exists():
        raise CotgenError(f"{ws.store_path}: no store yet; run `cotgen ingest` first")
    with open_store(ws, read_only=True) as store:
        return workspace_status(store)


@dataclass
class IngestStageResult:
    """What the ingest stage added, source by source."""

    reports: list[IngestReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"added": sum(r.added for r in self.reports), "sources": len(self.reports)}


class IngestStage:
    """Ingests every configured source; re-running adds nothing that is already in the store."""

    name = "ingest"

    def run(self, ws: Workspace, report: Reporter) -> IngestStageResult:
        if not ws.config.sources:
            raise CotgenError("stage ingest: no [[sources]] in cotgen.toml; `cotgen ingest PATH` adds one")
        return IngestStageResult(ingest_sources(ws, ws.config.sources, report=report))


STAGES = [IngestStage()]
