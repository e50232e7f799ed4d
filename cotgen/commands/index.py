"""`cotgen index build|search|info` and the `index` pipeline stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, table
from retrieval.documents import load_documents
from retrieval.index import DOCS_FILE, INDEX_FILE, MANIFEST_FILE, BuildReport, RuleIndex, layout_texts
from retrieval.search import check_template, compose_query, search_text
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.workspace import Workspace

app = typer.Typer(help="The rule index: build it from the rule sources, search it, describe it.", no_args_is_help=True)


def index_dir(ws: Workspace) -> Path:
    return ws.indexes_dir / ws.config.index.name


def workspace_documents(ws: Workspace) -> list[Rule]:
    """The documents named by `index.rules`, relative directories resolved against the workspace."""
    return load_documents(ws.config.index.rules, base=ws.root, schemes=ws.config.schemes)


def build_index(ws: Workspace) -> RuleIndex:
    """Build or update the workspace index; only changed documents are embedded, an unchanged one is kept."""
    cfg = ws.config.index
    check_template(cfg.query_template)
    docs = workspace_documents(ws)
    columns = (SpinnerColumn(), TextColumn("embedding rules, knowledge and cues"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("embed", total=len(layout_texts(docs)))
        return RuleIndex.build(docs, index_dir(ws), cfg.embedder, cfg.kind, params=cfg.params,
                               approx_above=cfg.approx_above, device=cfg.device, batch_size=cfg.batch_size,
                               progress=lambda n: bar.advance(task, n))


def load_index(ws: Workspace) -> RuleIndex:
    """The built workspace index; an error when it is missing, corrupt or built with another embedder."""
    return RuleIndex.load(index_dir(ws), embedder=ws.config.index.embedder, device=ws.config.index.device)


def _report_rows(report: BuildReport, path: Path) -> list[list[Any]]:
    params = ", ".join(f"{k}={v}" for k, v in report.params.items()) or "-"
    return [["documents", report.documents], ["documents embedded now", report.embedded],
            ["documents from cache", report.reused], ["texts embedded now", report.texts_embedded],
            ["index kind", report.kind], ["parameters", params],
            ["written", "yes" if report.written else "no (already up to date)"], ["path", str(path)]]


@app.command("build")
def build_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Embed the rule sources (index.rules) and write the index; re-running embeds only changed documents."""
    ws = open_workspace(workspace)
    idx = build_index(ws)
    assert idx.report is not None
    if as_json:
        emit_json({**idx.report.to_dict(), "path": str(idx.index_dir)})
        return
    console.print(table("index build", ["", "value"], _report_rows(idx.report, idx.index_dir)))


@app.command("search")
def search_command(
    text: Annotated[str, typer.Argument(help="The query (or any text) to find rules for.")],
    item: Annotated[str | None, typer.Option("--item", help="An item title: searches the pair through index.query_template.")] = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="How many documents (default: index.k).")] = None,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="rule | knowledge (repeatable; default both).")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only documents with this tag (repeatable: any of them).")] = None,
    scheme: Annotated[str | None, typer.Option("--scheme", help="Only documents that hold under this label scheme.")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """The rules and knowledge entries closest to TEXT (or to the pair TEXT + --item), best first."""
    ws = open_workspace(workspace)
    kinds = tuple(kind or ("rule", "knowledge"))
    bad = [x for x in kinds if x not in ("rule", "knowledge")]
    if bad:
        raise CotgenError(f"--kind: '{bad[0]}' is not a document kind (rule, knowledge)")
    if scheme is not None:
        ws.config.scheme(scheme)
    query = text
    if item is not None:
        check_template(ws.config.index.query_template)
        pair = Pair(pair_id="", source="cli", query=text, title=item, label="", scheme=scheme or "")
        query = compose_query(pair, ws.config.index.query_template)
    idx = load_index(ws)
    hits = search_text(idx, query, k or ws.config.index.k, kinds=kinds, scheme=scheme, tags=tag)
    if as_json:
        emit_json({"query": query, "hits": [{"rank": r, "score": round(s, 4), **d.model_dump()}
                                             for r, (d, s) in enumerate(hits, 1)]})
        return
    out = Table(title=f"search: {query}", title_justify="left")
    out.add_column("id (best first)", no_wrap=True)  # ids are what people copy; never cut them
    for name in ("score", "kind", "grades"):
        out.add_column(name, justify="right")
    out.add_column("title")
    for d, score in hits:
        out.add_row(d.id, f"{score:.3f}", d.kind, ",".join(d.grades) or "-", d.title)
    console.print(out)


def index_info(ws: Workspace) -> dict[str, Any]:
    """The manifest plus what the rule sources hold now: is the index up to date?"""
    path = index_dir(ws)
    idx = load_index(ws)
    manifest = idx.manifest
    current = {d.id: d.content_hash() for d in workspace_documents(ws)}
    built = manifest.documents
    kinds: dict[str, int] = {}
    for d in idx.docs:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    return {
        "path": str(path), "embedder": manifest.embedder, "dim": manifest.dim, "kind": manifest.kind,
        "params": manifest.params, "documents": manifest.count, "by_kind": kinds, "built_at": manifest.built_at,
        "toolkit_version": manifest.toolkit_version,
        "bytes": sum((path / f).stat().st_size for f in (INDEX_FILE, DOCS_FILE, MANIFEST_FILE)),
        "added": sorted(set(current) - set(built)), "removed": sorted(set(built) - set(current)),
        "changed": sorted(i for i in set(current) & set(built) if current[i] != built[i]),
    }


@app.command("info")
def info_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """What the index holds, how it was built, and whether the rule sources changed since."""
    info = index_info(open_workspace(workspace))
    if as_json:
        emit_json(info)
        return
    stale = len(info["added"]) + len(info["removed"]) + len(info["changed"])
    rows = [["path", info["path"]], ["embedder", f"{info['embedder']} (dim {info['dim']})"],
            ["index kind", info["kind"]], ["parameters", ", ".join(f"{k}={v}" for k, v in info["params"].items()) or "-"],
            ["documents", ", ".join(f"{n} {k}" for k, n in sorted(info["by_kind"].items()))],
            ["built", f"{info['built_at']} by cotgen {info['toolkit_version']}"], ["size", f"{info['bytes']:,} bytes"],
            ["up to date", "yes" if not stale else
             f"no: {len(info['added'])} added, {len(info['changed'])} changed, {len(info['removed'])} removed; "
             "run `cotgen index build`"]]
    console.print(table("index", ["", "value"], rows))


class IndexStage:
    """Builds or updates the workspace index; a no-op when the rule sources did not change."""

    name = "index"

    def run(self, ws: Workspace) -> dict[str, Any]:
        idx = build_index(ws)
        assert idx.report is not None
        console.print(table("index", ["", "value"], _report_rows(idx.report, idx.index_dir)))
        return {"documents": idx.report.documents, "embedded": idx.report.embedded, "written": idx.report.written}


STAGES: list = [IndexStage()]


def register(root: typer.Typer) -> None:
    """Mount this area's commands on the root app."""
    root.add_typer(app, name="index")
