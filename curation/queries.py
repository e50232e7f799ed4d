"""The one way to reach SQL: every statement lives in curation/sql/*.sql under a `-- name: NAME` line.

`sql("stats.votes")` is the statement `votes` of `sql/stats.sql`. Identifiers that must be built at run
time (a temp table per selection kind) go through `ident`, never through string formatting elsewhere.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from schemas.errors import CotgenError


@cache
def _statements(filename: str) -> dict[str, str]:
    text = resources.files("curation").joinpath("sql", filename).read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)[ \t]*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def sql(name: str) -> str:
    """The statement `FILE.NAME` (`sql/FILE.sql`, `-- name: NAME`)."""
    filename, _, statement = name.partition(".")
    return _statements(f"{filename}.sql")[statement]


def ident(name: str) -> str:
    """A run-time identifier (table or column name) quoted for DuckDB; only [A-Za-z0-9_] is accepted."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise CotgenError(f"not a valid SQL identifier: {name!r}")
    return f'"{name}"'
