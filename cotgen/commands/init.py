"""`cotgen init`: write a commented cotgen.toml (and, with --example, a small source of pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cotgen.app.workspace import init_workspace
from cotgen.commands.common import console


def init(
    directory: Annotated[Path, typer.Argument(help="Workspace directory to create.")] = Path("."),
    example: Annotated[bool, typer.Option("--example", help="Also write a small example source of pairs.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing cotgen.toml.")] = False,
) -> None:
    """Create a workspace: a commented cotgen.toml, and with --example a source to run the pipeline on."""
    result = init_workspace(directory, example=example, force=force)
    for path in result.written:
        console.print(f"wrote {path}")
    console.print(f"next: [bold]cotgen run -w {directory}[/] (or `cotgen ingest` a source of your own)")
