"""What every command shares: the workspace option, --json output, config overrides, one-line errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemas.errors import CotgenError
from schemas.workspace import Workspace

console = Console()
err_console = Console(stderr=True)

WorkspaceOpt = Annotated[
    Path, typer.Option("-w", "--workspace", help="Workspace directory (holds cotgen.toml).", show_default="current directory")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]

M = TypeVar("M", bound=BaseModel)


def open_workspace(path: Path) -> Workspace:
    return Workspace.open(path)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def merge_overrides(section: M, where: str, **overrides: Any) -> M:
    """`section` with the command-line values that were given (None means not given), validated as a whole."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(section).model_validate({**section.model_dump(), **given})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CotgenError(f"{where}: {field}: {err['msg']}") from None


def pct(v: float | None) -> str:
    """A share as a percentage with one decimal; '-' when there is nothing to divide by."""
    return "-" if v is None else f"{v:.1%}"


_NUMBER = re.compile(r"[-+]?[\d,.]*\d[\d,.]*\s*(%|s|ms|x)?|-|")


def table(title: str, columns: list[str], rows: list[list[Any]], whole: tuple[str, ...] = ()) -> RenderableType:
    """A rich table that reads at 80 columns and in logs: the title gets its own line where it fits (never
    broken mid-word by a narrow table), values fold instead of ending in an ellipsis, and the `whole` columns
    (names, ids and paths people copy into --run or --model) are never cut. When those cannot fit side by side,
    each row becomes a short block of `column: value` lines instead."""
    cells = [[f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v) for v in r] for r in rows]
    widths = _word_widths(columns, cells, whole)
    if widths is None:
        return _records(title, columns, cells)
    t = Table(title=title, title_justify="left", min_width=min(len(title), console.width))
    for i, c in enumerate(columns):
        numeric = i > 0 and all(_NUMBER.fullmatch(r[i]) for r in cells)  # text reads from the left, figures align right
        t.add_column(c, justify="right" if numeric else "left", overflow="fold", no_wrap=c in whole,
                     min_width=widths.get(i))
    for r in cells:
        t.add_row(*r)
    return t


def _records(title: str, columns: list[str], cells: list[list[str]]) -> Group:
    """The table as blocks, one per row: its first value, then the other columns as `column: value`."""
    lines = [Text(title, style="italic")]
    for r in cells:
        lines.append(Text(f"- {r[0]}", overflow="fold"))
        lines += [Text(f"    {c}: {v}", overflow="fold") for c, v in zip(columns[1:], r[1:], strict=True)]
    return Group(*lines)


def _word_widths(columns: list[str], cells: list[list[str]], whole: tuple[str, ...]) -> dict[int, int] | None:
    """Minimum widths that keep each column's longest word unbroken, narrowest first, as far as the console
    allows (3 characters of border and padding per column, headers never narrower than their longest word);
    the remaining columns fold their long words. None when the `whole` columns and the headers do not fit."""
    def longest(texts: list[str]) -> int:
        return max((len(w) for text in texts for w in text.split()), default=0)

    header = {i: longest([c]) for i, c in enumerate(columns)}
    need = {i: max(header[i], longest([r[i] for r in cells])) for i in range(len(columns))}
    shrinkable = [i for i, c in enumerate(columns) if c not in whole]
    room = (console.width - 3 * len(columns) - 1 - sum(need[i] for i, c in enumerate(columns) if c in whole)
            - sum(header[i] for i in shrinkable))
    if room < 0:
        return None
    widths = {}
    for i in sorted(shrinkable, key=lambda i: need[i] - header[i]):
        if need[i] - header[i] <= room:
            widths[i], room = need[i], room - (need[i] - header[i])
    return widths
