"""`cotgen review`: the annotator's terminal card, plus `stats`, `import`, `export` and `gold` (use cases: cotgen.app.review)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cotgen.app import review as use
from cotgen.app.review import SessionSummary
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, pct, table
from cotgen.commands.progress import ProgressDisplay
from schemas.errors import CotgenError
from schemas.workspace import Workspace

app = typer.Typer(help="Annotator review: the terminal card, agreement stats, bulk import and export.")


def render_summary(summary: SessionSummary) -> None:
    """The closing lines: what this sitting wrote, and whether the store has it all."""
    console.print(f"session ended ({summary.reason}): {summary.decisions} decisions, {summary.entries} entries "
                  f"this session", markup=False, highlight=False)
    if summary.store_busy:
        message = (f"the store is busy: your decisions are safe in {summary.journal} and go into the store with "
                   f"the next `cotgen review` command")
    else:
        message = "all decisions are in the store"
    console.print(message, markup=False, highlight=False)
    for line in summary.bad_lines:
        err_console.print(f"[yellow]journal: {escape(line)}[/]")


def review_main(ws: Workspace, annotator: str, queue: str, run: str | None, limit: int | None) -> None:
    spec = use.queue_spec(annotator, queue, run, limit)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CotgenError("cotgen review needs a terminal; for bulk decisions use `cotgen review import FILE.jsonl`")
    from cotgen.tui.review import ReviewApp  # Textual loads only for the card, not for every command

    desk = use.start_session(ws, annotator, spec, limit)
    app = ReviewApp(desk)
    try:
        app.run()
    finally:
        render_summary(use.end_session(desk))
    if app.return_code == 130:  # Ctrl-C on the card: after the summary, end as every command ends on Ctrl-C
        raise KeyboardInterrupt


@app.callback(invoke_without_command=True)
def review_command(
    ctx: typer.Context,
    annotator: Annotated[str | None, typer.Option("--annotator", "-a", help="Your name; decisions are attributed to it.")] = None,
    queue: Annotated[str, typer.Option("--queue", "-q", help="disagreements | hard | parse-failures | contradictions | judge-disagreements | random | ids:FILE")] = "random",
    run: Annotated[str | None, typer.Option("--run", help="Only samples of this generation run.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-k", help="Review at most K items this session.")] = None,
    workspace: WorkspaceOpt = Path("."),
) -> None:
    """Review generated CoT on a full-screen card, one key per decision; resumes where you left off."""
    if ctx.invoked_subcommand is not None:
        return
    if annotator is None:
        raise CotgenError("cotgen review: give --annotator NAME (or a subcommand: stats, import, export, gold)")
    review_main(open_workspace(workspace), annotator, queue, run, limit)


@app.command("stats")
def stats_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Per annotator: items, accept/reject/edit/relabel rates, median seconds per item, gold accuracy; kappa on overlaps."""
    ws = open_workspace(workspace)
    with ProgressDisplay(quiet=as_json) as show:
        stats = use.stats(ws, report=show)
    if as_json:
        emit_json(stats)
        return

    def num(x: float | None, fmt: str = ".2f") -> str:
        return "-" if x is None else format(x, fmt)

    rows = stats["annotators"]
    console.print(table("decisions per annotator (s/item: median seconds per item)",
                        ["annotator", "items", "skip", "accept", "reject", "edit", "relabel", "s/item"],
                        [[s["annotator"], s["items"], s["skipped"], pct(s["accept_rate"]), pct(s["reject_rate"]),
                          pct(s["edit_rate"]), pct(s["relabel_rate"]), num(s["median_seconds"], ".1f")] for s in rows]))
    console.print(table("gold pairs (bad accepts: accepted samples whose label is not the trusted one)",
                        ["annotator", "gold items", "label accuracy", "bad accepts"],
                        [[s["annotator"], s["gold_items"], pct(s["gold_label_accuracy"]), s["gold_wrong_accepts"]]
                         for s in rows]))
    console.print(table("agreement on shared items (Cohen's kappa)",
                        ["annotators", "shared", "kappa label", "acc/rej shared", "kappa acc/rej"],
                        [[f"{a['annotator_a']} / {a['annotator_b']}", a["items"], num(a["label_kappa"]),
                          a["decision_items"], num(a["decision_kappa"])] for a in stats["agreement"]]))


@app.command("import")
def import_command(
    path: Annotated[Path, typer.Argument(help="JSONL, one decision per line (the fields of `cotgen review export`).")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Import decisions from other tools: the whole file is checked first; a bad line imports nothing."""
    report = use.import_decisions(open_workspace(workspace), path)
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(table(f"import {path}", ["", "count"], [["records", report.records], ["added", report.inserted],
                                                          ["already in the store", report.already_present]]))


@app.command("export")
def export_command(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write JSONL here (default: stdout).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Only decisions in force (no undo rows, nothing undone).")] = False,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Every decision, oldest first, as JSONL that `cotgen review import` reads back (--json: a JSON array)."""
    ws = open_workspace(workspace)
    with ProgressDisplay(quiet=as_json) as show:
        result = use.export_decisions(ws, output, live, report=show)
    if output is None:
        if as_json:
            emit_json(result.rows)
        else:
            sys.stdout.write("".join(json.dumps(r) + "\n" for r in result.rows))
    elif as_json:
        emit_json(result.to_dict())
    else:
        console.print(f"wrote {len(result.rows):,} decisions to {output}")


@app.command("gold")
def gold_command(
    path: Annotated[Path, typer.Argument(help="CSV (pair_id,label\\[,note]) or JSONL of pairs with a trusted label.")],
    added_by: Annotated[str, typer.Option("--by", help="Who vouches for these labels.")] = "",
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Mark pairs as gold: their trusted labels score annotators (review.gold_fraction of each queue)."""
    result = use.add_gold_pairs(open_workspace(workspace), path, added_by)
    if as_json:
        emit_json(result.to_dict())
    else:
        console.print(f"{result.added:,} gold pairs added or updated; {result.gold_pairs:,} in all")


def register(root: typer.Typer) -> None:
    """Mount `cotgen review` and its subcommands on the root app."""
    root.add_typer(app, name="review")

