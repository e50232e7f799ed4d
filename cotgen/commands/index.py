"""`cotgen index build|search|info`: signatures and rendering; the use cases live in cotgen.app.index."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cotgen.app.index import BuildResult, IndexStageResult, build_index, index_info, search
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace, table
from cotgen.commands.progress import ProgressDisplay


class Kind(str, Enum):
    """Document kinds `--kind` accepts (typer lists of Literals are not supported; an Enum is)."""

    rule = "rule"
    knowledge = "knowledge"


app = typer.Typer(help="The rule index: build it from the rule sources, search it, describe it.", no_args_is_help=True)


def _report_rows(built: BuildResult) -> list[list[Any]]:
    report = built.report
    params = ", ".join(f"{k}={v}" for k, v in report.params.items()) or "-"
    return [["documents", report.documents], ["documents embedded now", report.embedded],
            ["documents from cache", report.reused], ["texts embedded now", report.texts_embedded],
            ["index kind", report.kind], ["parameters", params],
            ["written", "yes" if report.written else "no (already up to date)"], ["path", str(built.path)]]


@app.command("build")
def build_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Embed the rule sources (index.rules) and write the index; re-running embeds only changed documents."""
    ws = open_workspace(workspace)
    with ProgressDisplay(quiet=as_json) as show:
        built = build_index(ws, report=show)
    if as_json:
        emit_json(built.to_dict())
        return
    console.print(table("index build", ["", "value"], _report_rows(built)))


@app.command("search")
def search_command(
    text: Annotated[str, typer.Argument(help="The query (or any text) to find rules for.")],
    item: Annotated[str | None, typer.Option("--item", help="An item title: searches the pair through index.query_template.")] = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="How many documents (default: index.k).")] = None,
    kind: Annotated[list[Kind] | None, typer.Option("--kind", help="rule | knowledge (repeatable; default both).")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only documents with this tag (repeatable: any of them).")] = None,
    scheme: Annotated[str | None, typer.Option("--scheme", help="Only documents that hold under this label scheme.")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """The rules and knowledge entries closest to TEXT (or to the pair TEXT + --item), best first."""
    ws = open_workspace(workspace)
    found = search(ws, text, item=item, k=k, kinds=[k.value for k in kind] if kind else ("rule", "knowledge"), tags=tag, scheme=scheme)
    if as_json:
        emit_json(found.to_dict())
        return
    console.print(f"[bold]search:[/] {found.query}", highlight=False, soft_wrap=True)
    out = Table()
    out.add_column("id (best first)", no_wrap=True)  # ids are what people copy; never cut them
    for name in ("score", "kind"):
        out.add_column(name, justify="right", no_wrap=True)
    out.add_column("grades", justify="right", overflow="fold")
    out.add_column("title", min_width=24, ratio=1)  # wraps by words, never one word per line
    for d, score in found.hits:
        out.add_row(d.id, f"{score:.3f}", d.kind, ",".join(d.grades) or "-", d.title)
    console.print(out)


@app.command("info")
def info_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """What the index holds, how it was built, and whether the rule sources changed since."""
    info = index_info(open_workspace(workspace))
    if as_json:
        emit_json(info.to_dict())
        return
    rows = [["path", info.path], ["embedder", f"{info.embedder} (dim {info.dim})"],
            ["index kind", info.kind], ["parameters", ", ".join(f"{k}={v}" for k, v in info.params.items()) or "-"],
            ["documents", ", ".join(f"{n} {k}" for k, n in sorted(info.by_kind.items()))],
            ["built", f"{info.built_at} by cotgen {info.toolkit_version}"], ["size", f"{info.bytes:,} bytes"],
            ["up to date", "yes" if not info.stale else
             f"no: {len(info.added)} added, {len(info.changed)} changed, {len(info.removed)} removed; "
             "run `cotgen index build`"]]
    console.print(table("index", ["", "value"], rows))


def render_index(result: IndexStageResult) -> None:
    """The `index` stage of `cotgen run`, shown like `index build`."""
    console.print(table("index", ["", "value"], _report_rows(result.build)))


def register(root: typer.Typer) -> None:
    """Mount this area's commands on the root app."""
    root.add_typer(app, name="index")
