"""`cotgen run`: the configured pipeline, stage by stage."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cotgen.commands import curate, generate, index, review, train
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace
from cotgen.commands.ingest import ingest_sources, print_report
from cotgen.pipeline import Stage
from schemas.errors import CotgenError
from schemas.workspace import Workspace


class IngestStage:
    name = "ingest"

    def run(self, ws: Workspace) -> dict[str, Any]:
        if not ws.config.sources:
            raise CotgenError("stage ingest: no [[sources]] in cotgen.toml")
        reports = ingest_sources(ws, ws.config.sources, skip_bad=False)
        for r in reports:
            print_report(r)
        return {"added": sum(r.added for r in reports), "sources": len(reports)}


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [IngestStage(), *index.STAGES, *generate.STAGES, *curate.STAGES, *review.STAGES, *train.STAGES]
}


def run_command(
    only: Annotated[list[str] | None, typer.Option("--stage", help="Run only these stages (repeatable).")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Run the stages listed in cotgen.toml (pipeline.stages). Interrupt and re-run: it continues where it stopped."""
    ws = open_workspace(workspace)
    if as_json:
        # Stage tables go to stderr so stdout holds only the JSON summary.
        console.file = sys.stderr
    names = only or ws.config.pipeline.stages
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise CotgenError(f"pipeline.stages: unknown stage {', '.join(unknown)} (available: {', '.join(STAGES)})")
    results = {}
    for name in names:
        console.rule(f"[bold]{name}")
        started = time.monotonic()
        results[name] = {**STAGES[name].run(ws), "seconds": round(time.monotonic() - started, 2)}
    if as_json:
        emit_json(results)
