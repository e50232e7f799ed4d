"""`cotgen review`: the annotator's terminal card, plus `stats`, `import`, `export` and `gold` (use cases: cotgen.app.review)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape

from cotgen.app import review as use
from cotgen.app.review import ReviewDesk, SessionSummary
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, pct, table
from cotgen.commands.progress import ProgressDisplay
from curation.review.card import CardFrame, menu, render_card, render_guidelines
from schemas.errors import CotgenError
from schemas.workspace import Workspace

app = typer.Typer(help="Annotator review: the terminal card, agreement stats, bulk import and export.")


class Keyboard:
    """Single keys from the terminal. It stays in cbreak mode for the whole session (a per-key raw mode would
    flush keys typed while a card is still drawing); `cooked()` gives line input and the editor a normal tty."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        self._saved = termios.tcgetattr(self.fd)

    def __enter__(self) -> Keyboard:
        tty.setcbreak(self.fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead
        return self

    def __exit__(self, *exc: object) -> None:
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def get(self) -> str:
        """One key; end of input reads as quit."""
        first = os.read(self.fd, 1)
        if not first:
            return "q"
        extra = 3 if first[0] >= 0xF0 else 2 if first[0] >= 0xE0 else 1 if first[0] >= 0xC0 else 0
        data = first + (os.read(self.fd, extra) if extra else b"")
        return data.decode("utf-8", errors="replace")

    @contextmanager
    def cooked(self) -> Iterator[None]:
        termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        try:
            yield
        finally:
            tty.setcbreak(self.fd, termios.TCSANOW)


class ReviewUI:
    """Draws the card and turns single keys into decisions at the desk."""

    def __init__(self, desk: ReviewDesk, keyboard: Keyboard):
        self.desk = desk
        self.kb = keyboard
        self.status = ""
        self.guidelines = False
        self.keys: dict[str, Callable[[], None]] = {
            "a": self.accept, "r": self.reject, "l": self.relabel, "e": self.edit, "m": self.mark_steps,
            "n": self.note, "s": self.skip, "u": self.undo, "g": self.toggle_guidelines,
        }

    def frame(self, menu_panel: RenderableType | None = None) -> CardFrame:
        desk = self.desk
        status = self.status
        if desk.store_error():
            status = f"{status}  [store: {desk.store_error()}; decisions are safe in the journal]".strip()
        return CardFrame(annotator=desk.session.annotator, queue=desk.queue, progress=desk.session.progress(),
                         scheme=desk.scheme(), rules=desk.rules.texts(desk.current.rule_ids), status=status,
                         menu=menu_panel)

    def draw(self, menu_panel: RenderableType | None = None) -> None:
        item = self.desk.current
        frame = self.frame(menu_panel)
        console.clear()
        if self.guidelines:
            cfg = self.desk.cfg
            console.print(render_guidelines(item, frame, cfg.reject_reasons, cfg.relabel_reasons))
        else:
            console.print(render_card(item, self.desk.view(), frame))

    def pick(self, title: str, options: list[tuple[str, str]]) -> str | None:
        """Show a numbered menu under the card and read one digit; None when cancelled."""
        self.draw(menu(title, options))
        key = self.kb.get()
        if key.isdigit() and 1 <= int(key) <= len(options):
            return options[int(key) - 1][0]
        self.status = f"{title}: cancelled"
        return None

    def run(self) -> None:
        while self.desk.current is not None:
            self.draw()
            key = self.kb.get()
            if key in ("q", "Q"):
                return
            action = self.keys.get(key.lower())
            self.status = "" if action else f"unknown key {key!r}"
            if action:
                try:
                    action()
                except OSError as e:  # the journal could not be written: the decision did not count
                    self.status = f"NOT saved: cannot write the review journal ({e})"

    def _needs_sample(self, what: str) -> bool:
        missing = self.desk.needs_sample(what)
        if missing:
            self.status = missing
        return missing is None

    def accept(self) -> None:
        self.status = self.desk.accept()

    def reject(self) -> None:
        if not self._needs_sample("reject"):
            return
        code = self.pick("reject: reason", list(self.desk.cfg.reject_reasons.items()))
        if code:
            self.status = self.desk.reject(code)

    def relabel(self) -> None:
        scheme = self.desk.scheme()
        grade = self.pick("relabel: new gold label", [(g.id, f"{g.name}: {g.meaning}") for g in scheme.grades])
        if not grade:
            return
        code = self.pick(f"relabel to {grade}: reason", list(self.desk.cfg.relabel_reasons.items()))
        if code:
            self.status = self.desk.relabel(grade, code)

    def edit(self) -> None:
        if not self._needs_sample("edit"):
            return
        before = self.desk.answer_text()
        with self.kb.cooked():
            edited = run_editor(before)
        self.status = self.desk.save_edit(before, edited)

    def mark_steps(self) -> None:
        item = self.desk.current
        if not self._needs_sample("mark") or not item.steps:
            self.status = self.status or "no parsed steps to mark"
            return
        for i in range(len(item.steps)):
            self.status = f"step {i + 1} of {len(item.steps)}: y correct · n incorrect · space keep · other key stops"
            self.draw()
            key = self.kb.get()
            if key in ("y", "n"):
                self.desk.mark(i, key == "y")
            elif key != " ":
                break
        self.status = "steps marked"

    def note(self) -> None:
        self.status = "type a note, Enter saves (empty cancels)"
        self.draw()
        with self.kb.cooked():
            text = console.input("note: ")
        self.status = self.desk.note(text)

    def skip(self) -> None:
        self.status = self.desk.skip()

    def undo(self) -> None:
        self.status = self.desk.undo()

    def toggle_guidelines(self) -> None:
        self.guidelines = not self.guidelines


def run_editor(text: str) -> str | None:
    """Open `text` in $VISUAL/$EDITOR (vi by default); the file's content afterwards, or None on failure."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="cotgen-edit-", delete=False, encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n")
        path = Path(fh.name)
    try:
        proc = subprocess.run([*shlex.split(editor), str(path)], check=False)
        return path.read_text(encoding="utf-8") if proc.returncode == 0 else None
    except OSError:
        return None
    finally:
        path.unlink(missing_ok=True)


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
    desk = use.start_session(ws, annotator, spec, limit)
    try:
        with Keyboard() as keyboard:
            ReviewUI(desk, keyboard).run()
    finally:
        summary = use.end_session(desk)
        console.clear()
        render_summary(summary)


@app.callback(invoke_without_command=True)
def review_command(
    ctx: typer.Context,
    annotator: Annotated[str | None, typer.Option("--annotator", "-a", help="Your name; decisions are attributed to it.")] = None,
    queue: Annotated[str, typer.Option("--queue", "-q", help="disagreements | hard | parse-failures | contradictions | random | ids:FILE")] = "random",
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

