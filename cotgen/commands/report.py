"""`cotgen report`: the data report of the store as PNG plots (and the figures behind them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cotgen.app.report import store_report
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace, table


def report_command(
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Folder for the PNGs.", show_default="WORKSPACE/report")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Plots of the whole store: labels per split, difficulty, pass@k, teacher agreement, most-retrieved rules."""
    result = store_report(open_workspace(workspace), out)
    if as_json:
        emit_json(result.to_dict())
        return
    console.print(table(f"report ({result.scope})", ["plot", "file"], [[p.stem, str(p)] for p in result.plots]))
