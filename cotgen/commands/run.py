"""`cotgen run`: the configured pipeline, stage by stage; stages live in cotgen.app, rendering here."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cotgen.app.pipeline import stages
from cotgen.commands import curate, generate, index, ingest, judge, train
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace
from cotgen.commands.progress import ProgressDisplay
from schemas.errors import CotgenError

# How each stage's result is shown; a stage with no entry shows nothing but its JSON line.
RENDERERS: dict[str, Callable[[Any], None]] = {
    "ingest": ingest.render_ingest,
    "index": index.render_index,
    "generate": generate.render_stage,
    "judge": judge.render_stage,
    "curate": curate.render_curate,
    "export": curate.render_export,
    "train": train.render_train_stage,
    "eval": train.render_eval_stage,
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
    known = stages()
    names = only or ws.config.pipeline.stages
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CotgenError(f"pipeline.stages: unknown stage {', '.join(unknown)} (available: {', '.join(known)})")
    results = {}
    for name in names:
        console.rule(f"[bold]{name}")
        started = time.monotonic()
        with ProgressDisplay(quiet=as_json) as display:
            result = known[name].run(ws, display)
        if name in RENDERERS:
            RENDERERS[name](result)
        results[name] = {**result.to_dict(), "seconds": round(time.monotonic() - started, 2)}
    if as_json:
        emit_json(results)
