"""`cotgen init`: write a commented cotgen.toml (and, with --example, a small source of pairs)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from cotgen.commands.common import console
from schemas.config import CONFIG_FILE, parse_config
from schemas.errors import CotgenError

EXAMPLE_FILE = "data/example_pairs.csv"
EXAMPLE_SOURCE = f'''[[sources]]
name = "example"
path = "{EXAMPLE_FILE}"
scheme = "taosr4"

[sources.columns]
query = "query"
title = "title"
description = "description"
label = "label"
'''
NO_SOURCE = '''# [[sources]]
# name = "crowdflower"
# path = "../shared/data/crowdflower/train_dev.csv"
# scheme = "crowdflower"
# strip_html = true
# [sources.columns]
# id = "id"
# query = "query"
# title = "product_title"
# description = "product_description"
# label = "median_relevance"
'''
DEFAULT_STAGES = '["ingest", "index", "generate", "curate", "export"]'


def render_config(example: bool) -> str:
    template = resources.files("cotgen").joinpath("templates/cotgen.toml").read_text(encoding="utf-8")
    text = template.replace("{sources}", EXAMPLE_SOURCE if example else NO_SOURCE).replace("{stages}", DEFAULT_STAGES)
    parse_config(text)
    return text


def init(
    directory: Annotated[Path, typer.Argument(help="Workspace directory to create.")] = Path("."),
    example: Annotated[bool, typer.Option("--example", help="Also write a small example source of pairs.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing cotgen.toml.")] = False,
) -> None:
    """Create a workspace: a commented cotgen.toml, and with --example a source to run the pipeline on."""
    config_path = directory / CONFIG_FILE
    if config_path.exists() and not force:
        raise CotgenError(f"{config_path} already exists; pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    config_path.write_text(render_config(example), encoding="utf-8")
    console.print(f"wrote {config_path}")
    if example:
        target = directory / EXAMPLE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(resources.files("cotgen").joinpath("templates/example_pairs.csv")) as src:
            shutil.copyfile(src, target)
        console.print(f"wrote {target}")
    console.print(f"next: [bold]cotgen run -w {directory}[/] (or `cotgen ingest` a source of your own)")
