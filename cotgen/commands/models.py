"""`cotgen models`: list bundled models and prepare them (convert SmolLM2's GGUF once)."""

from __future__ import annotations

from typing import Annotated

import typer

from cotgen.commands.common import console, table
from schemas.models import BUNDLED, BUNDLED_PREFIX, cache_dir, prepare_bundled

app = typer.Typer(help="Bundled models that work offline.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Bundled model references and where they resolve."""
    rows = [[BUNDLED_PREFIX + name, spec.package, "converted from GGUF on first use" if spec.gguf else "as shipped"]
            for name, spec in BUNDLED.items()]
    console.print(table("bundled models", ["reference", "package", "form"], rows, whole=("reference",)))
    console.print(f"cache: {cache_dir()}")


@app.command("prepare")
def prepare(names: Annotated[list[str] | None, typer.Argument(help="Bundled names; default all.")] = None) -> None:
    """Resolve bundled models now (convert the SmolLM2 GGUF into a plain HF checkpoint in the cache)."""
    for name in names or list(BUNDLED):
        console.print(f"{BUNDLED_PREFIX}{name} -> {prepare_bundled(name.removeprefix(BUNDLED_PREFIX))}")
