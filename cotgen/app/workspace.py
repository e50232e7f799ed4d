"""Workspace files: `cotgen init` writes a commented cotgen.toml; a CLI-ingested file is appended as a source."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from schemas.config import CONFIG_FILE, SourceConfig, parse_config
from schemas.errors import CotgenError
from schemas.workspace import Workspace

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
    """The commented cotgen.toml `init` writes (with the example source, or a commented-out one)."""
    template = resources.files("cotgen").joinpath("templates/cotgen.toml").read_text(encoding="utf-8")
    text = template.replace("{sources}", EXAMPLE_SOURCE if example else NO_SOURCE).replace("{stages}", DEFAULT_STAGES)
    parse_config(text)
    return text


@dataclass(frozen=True)
class InitResult:
    """The files `init_workspace` wrote."""

    directory: Path
    written: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "written": [str(p) for p in self.written]}


def init_workspace(directory: Path, example: bool = False, force: bool = False) -> InitResult:
    """Write cotgen.toml (refusing to overwrite one without `force`) and, with `example`, a small source."""
    config_path = directory / CONFIG_FILE
    if directory.exists() and not directory.is_dir():
        raise CotgenError(f"{directory}: a file, not a folder; name a folder for the workspace")
    if config_path.exists() and not force:
        raise CotgenError(f"{config_path} already exists; pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    config_path.write_text(render_config(example), encoding="utf-8")
    written = [config_path]
    if example:
        target = directory / EXAMPLE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        with resources.as_file(resources.files("cotgen").joinpath("templates/example_pairs.csv")) as src:
            shutil.copyfile(src, target)
        written.append(target)
    return InitResult(directory, written)


def _toml_value(value: Any) -> str:
    # A JSON string or list of strings is a valid TOML basic string or array; booleans are spelled alike.
    return json.dumps(value, ensure_ascii=False)


def source_toml(source: SourceConfig, path: str) -> str:
    """A `[[sources]]` table for `source`, with only the settings that differ from the defaults."""
    lines = ["[[sources]]", f"name = {_toml_value(source.name)}", f"path = {_toml_value(path)}",
             f"scheme = {_toml_value(source.scheme)}"]
    defaults = SourceConfig(name=source.name, path=path)
    for key in ("format", "encoding", "strip_html"):
        if getattr(source, key) != getattr(defaults, key):
            lines.append(f"{key} = {_toml_value(getattr(source, key))}")
    columns = source.columns.model_dump(include=source.columns.model_fields_set, exclude_none=True)
    if columns:  # only the fields mapped; the others are detected again from the headers
        lines.append("[sources.columns]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in columns.items() if v != []]
    return "\n".join(lines) + "\n"


def record_source(ws: Workspace, source: SourceConfig) -> Path:
    """Append `source` to the workspace's cotgen.toml as it is (comments kept); paths inside it stay relative."""
    config_path = ws.root / CONFIG_FILE
    path = Path(source.path).resolve()
    shown = str(path.relative_to(ws.root)) if path.is_relative_to(ws.root) else str(path)
    text = config_path.read_text(encoding="utf-8")
    appended = text + ("" if text.endswith("\n") else "\n") + "\n" + source_toml(source, shown)
    parse_config(appended, origin=str(config_path))  # never leave a config that does not load
    config_path.write_text(appended, encoding="utf-8")
    return config_path
