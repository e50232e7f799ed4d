"""What every command shares: the workspace option, --json output, one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from schemas.workspace import Workspace

console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = Annotated[
    Path, typer.Option("-w", "--workspace", help="Workspace directory (holds cotgen.toml).", show_default="current directory")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def open_workspace(path: Path) -> Workspace:
    return Workspace.open(path)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in r))
    return t
