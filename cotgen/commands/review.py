"""`cotgen review`: the annotator's terminal card, plus `stats`, `import`, `export` and `gold`.

Every decision goes through curation.review_log: fsynced to the annotator's journal first (it counts from
then on), then copied into the store by a background thread with short write transactions, so annotators,
`cotgen generate` and `status` share the single-writer DuckDB file without losing or blocking each other.
"""

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
from functools import cached_property
from pathlib import Path
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape

from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, table
from curation.review_card import CardFrame, RuleText, menu, render_card, render_guidelines
from curation.review_io import export_reviews, import_reviews, normalize_edit, read_gold
from curation.review_log import (
    BackgroundStore,
    FlushReport,
    check_annotator,
    flush_workspace,
    gated_store,
    journal_dir,
)
from curation.review_queue import (
    add_gold,
    parse_queue,
)
from curation.review_session import Session, open_session
from curation.review_stats import review_stats
from schemas.answer import render_answer
from schemas.config import ReviewConfig
from schemas.errors import CotgenError
from schemas.labels import LabelScheme
from schemas.workspace import Workspace

app = typer.Typer(help="Annotator review: the terminal card, agreement stats, bulk import and export.")
STAGES: list = []


class RuleBook:
    """Rule titles and texts from the workspace's rule index, loaded on first use; ids alone when it is missing."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.error = ""

    @cached_property
    def _index(self):
        try:
            from retrieval.index import RuleIndex

            return RuleIndex.load(self.ws.indexes_dir / self.ws.config.index.name)
        except (ImportError, CotgenError) as e:
            self.error = str(e)
            return None

    def texts(self, rule_ids: list[str]) -> list[RuleText]:
        if not rule_ids:
            return []
        index = self._index
        out = []
        for rid in rule_ids:
            try:
                rule = index.get(rid) if index is not None else None
            except CotgenError:
                rule = None
            out.append(RuleText(id=rid, title=rule.title, text=rule.text) if rule else RuleText(id=rid))
        return out


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
    """Draws the card and turns single keys into session decisions."""

    def __init__(self, ws: Workspace, session: Session, queue: str, rules: RuleBook, worker: BackgroundStore,
                 keyboard: Keyboard):
        self.ws = ws
        self.kb = keyboard
        self.session = session
        self.queue = queue
        self.rules = rules
        self.worker = worker
        self.status = ""
        self.guidelines = False
        self.drafts: dict[str, str] = {}  # an edit that did not parse comes back in the editor
        self.keys: dict[str, Callable[[], None]] = {
            "a": self.accept, "r": self.reject, "l": self.relabel, "e": self.edit, "m": self.mark_steps,
            "n": self.note, "s": self.skip, "u": self.undo, "g": self.toggle_guidelines,
        }

    @property
    def cfg(self) -> ReviewConfig:
        return self.ws.config.review

    def scheme(self) -> LabelScheme:
        return self.ws.config.scheme(self.session.current.scheme)

    def frame(self, menu_panel: RenderableType | None = None) -> CardFrame:
        item = self.session.current
        status = self.status
        if self.worker.error:
            status = f"{status}  [store: {self.worker.error}; decisions are safe in the journal]".strip()
        return CardFrame(annotator=self.session.annotator, queue=self.queue, progress=self.session.progress(),
                         scheme=self.scheme(), rules=self.rules.texts(item.rule_ids), status=status, menu=menu_panel)

    def draw(self, menu_panel: RenderableType | None = None) -> None:
        item = self.session.current
        frame = self.frame(menu_panel)
        console.clear()
        if self.guidelines:
            console.print(render_guidelines(item, frame, self.cfg.reject_reasons, self.cfg.relabel_reasons))
        else:
            console.print(render_card(item, self.session.view(item), frame))

    def pick(self, title: str, options: list[tuple[str, str]]) -> str | None:
        """Show a numbered menu under the card and read one digit; None when cancelled."""
        self.draw(menu(title, options))
        key = self.kb.get()
        if key.isdigit() and 1 <= int(key) <= len(options):
            return options[int(key) - 1][0]
        self.status = f"{title}: cancelled"
        return None

    def run(self) -> None:
        while self.session.current is not None:
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
        if self.session.current.sample_id is None:
            self.status = f"nothing to {what}: this card is the pair alone (accept, relabel, note or skip)"
            return False
        return True

    def accept(self) -> None:
        self.session.decide("accept")
        self.status = "accepted"

    def reject(self) -> None:
        if not self._needs_sample("reject"):
            return
        code = self.pick("reject: reason", list(self.cfg.reject_reasons.items()))
        if code:
            self.session.decide("reject", reason=code)
            self.status = f"rejected ({code})"

    def relabel(self) -> None:
        scheme = self.scheme()
        grade = self.pick("relabel: new gold label", [(g.id, f"{g.name}: {g.meaning}") for g in scheme.grades])
        if not grade:
            return
        code = self.pick(f"relabel to {grade}: reason", list(self.cfg.relabel_reasons.items()))
        if code:
            self.session.decide("relabel", new_label=grade, reason=code)
            self.status = f"relabelled to {grade} ({code})"

    def _answer_text(self) -> str:
        item = self.session.current
        view = self.session.view(item)
        if item.item_key in self.drafts:
            return self.drafts[item.item_key]
        if view.edit is not None and view.edit.edited_text:
            return view.edit.edited_text
        if item.steps and item.predicted_label:
            return render_answer(item.steps, item.predicted_label, item.answer_order)
        return item.raw_text

    def edit(self) -> None:
        if not self._needs_sample("edit"):
            return
        before = self._answer_text()
        with self.kb.cooked():
            edited = run_editor(before)
        if edited is None:
            self.status = "editor failed: nothing saved"
            return
        if edited.strip() == before.strip():
            self.status = "edit: no change"
            return
        key = self.session.current.item_key
        try:
            text = normalize_edit(edited, self.scheme())
        except ValueError as e:
            self.drafts[key] = edited
            self.status = f"edit not saved: {e}; press e to fix it"
            return
        self.drafts.pop(key, None)
        self.session.decide("edit", edited_text=text)
        self.status = "edited"

    def mark_steps(self) -> None:
        item = self.session.current
        if not self._needs_sample("mark") or not item.steps:
            self.status = self.status or "no parsed steps to mark"
            return
        for i in range(len(item.steps)):
            self.status = f"step {i + 1} of {len(item.steps)}: y correct · n incorrect · space keep · other key stops"
            self.draw()
            key = self.kb.get()
            if key in ("y", "n"):
                self.session.decide("step", step_index=i, step_correct=key == "y")
            elif key != " ":
                break
        self.status = "steps marked"

    def note(self) -> None:
        self.status = "type a note, Enter saves (empty cancels)"
        self.draw()
        with self.kb.cooked():
            text = console.input("note: ").strip()
        if text:
            self.session.decide("note", note=text)
        self.status = "note saved" if text else "note cancelled"

    def skip(self) -> None:
        self.session.decide("skip")
        self.status = "skipped"

    def undo(self) -> None:
        undone = self.session.undo()
        self.status = f"undid {undone.action} on {undone.sample_id or undone.pair_id}" if undone else "nothing to undo"

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


def _schemes(ws: Workspace) -> dict[str, list[str]]:
    return {name: ws.config.scheme(name).ids for name in ws.config.known_schemes()}


def _flush_message(report: FlushReport, journal: Path) -> str:
    if report.busy:
        return (f"the store is busy: your decisions are safe in {journal} and go into the store with the next "
                f"`cotgen review` command")
    return "all decisions are in the store"


def review_main(ws: Workspace, annotator: str, queue: str, run: str | None, limit: int | None) -> None:
    check_annotator(annotator)
    if limit is not None and limit < 1:
        raise CotgenError("--limit: give a positive number of items")
    spec = parse_queue(queue, run)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CotgenError("cotgen review needs a terminal; for bulk decisions use `cotgen review import FILE.jsonl`")
    session, worker = open_session(ws, annotator, spec, limit)
    try:
        with Keyboard() as keyboard:
            ReviewUI(ws, session, spec.key, RuleBook(ws), worker, keyboard).run()
    finally:
        report = worker.close()
        console.clear()
        done = sum(1 for r in session.written if r.action not in ("undo", "note", "step"))
        reason = "queue empty" if session.current is None else "quit"
        console.print(f"session ended ({reason}): {done} decisions, {len(session.written)} entries this session",
                      markup=False, highlight=False)
        console.print(_flush_message(report, journal_dir(ws) / f"{annotator}.jsonl"), markup=False, highlight=False)
        for line in worker.bad_lines:
            err_console.print(f"[yellow]journal: {escape(line)}[/]")


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


def _flush_first(ws: Workspace) -> None:
    report = flush_workspace(ws)
    if report.busy:
        err_console.print("[yellow]the store is busy: figures leave out decisions still in the journal[/]")


@app.command("stats")
def stats_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Per annotator: items, accept/reject/edit/relabel rates, median seconds per item, gold accuracy; kappa on overlaps."""
    ws = open_workspace(workspace)
    _flush_first(ws)
    with gated_store(ws, read_only=True) as store:
        stats = review_stats(store)
    if as_json:
        emit_json(stats)
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

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
    ws = open_workspace(workspace)
    report = import_reviews(ws, path)
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
    _flush_first(ws)
    with gated_store(ws, read_only=True) as store:
        rows = export_reviews(store, live_only=live)
    if output is None:
        if as_json:
            emit_json(rows)
        else:
            sys.stdout.write("".join(json.dumps(r) + "\n" for r in rows))
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = output.with_name(f".{output.name}.tmp")
    staged.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    staged.replace(output)
    if as_json:
        emit_json({"path": str(output), "reviews": len(rows)})
    else:
        console.print(f"wrote {len(rows):,} decisions to {output}")


@app.command("gold")
def gold_command(
    path: Annotated[Path, typer.Argument(help="CSV (pair_id,label\\[,note]) or JSONL of pairs with a trusted label.")],
    added_by: Annotated[str, typer.Option("--by", help="Who vouches for these labels.")] = "",
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Mark pairs as gold: their trusted labels score annotators (review.gold_fraction of each queue)."""
    ws = open_workspace(workspace)
    rows = read_gold(path)
    with gated_store(ws) as store:
        n = add_gold(store, rows, added_by, _schemes(ws), str(path))
        total = store.scalar("SELECT count(*) FROM review_gold")
    if as_json:
        emit_json({"added": n, "gold_pairs": total})
    else:
        console.print(f"{n:,} gold pairs added or updated; {total:,} in all")


def register(root: typer.Typer) -> None:
    """Mount `cotgen review` and its subcommands on the root app."""
    root.add_typer(app, name="review")

