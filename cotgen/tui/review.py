"""The review card as a Textual app: the pair always on top, scrolling panes below, one key per decision.

Every decision goes through the desk (cotgen.app.review.ReviewDesk), which journals it before the card moves on.
Wide terminals show two columns (answer, rules, description | reasoning); narrow ones stack the panes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import RenderableType
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static

from cotgen.app.review import ReviewDesk
from curation.review import card

WIDE_FROM = 110  # columns from which the panes sit in two columns
Editor = Callable[[str], "str | None"]


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


class Pane(VerticalScroll):
    """A titled, scrolling box holding one section of the card."""

    def __init__(self, title: str, **kw: object):
        super().__init__(**kw)
        self.border_title = title

    def compose(self) -> ComposeResult:
        yield Static(classes="content")

    def show(self, content: RenderableType, title: str | None = None) -> None:
        self.query_one(".content", Static).update(content)
        if title is not None:
            self.border_title = title


class MenuScreen(ModalScreen[str | None]):
    """A numbered single-key menu: digit i picks option i; any other key cancels."""

    def __init__(self, title: str, options: list[tuple[str, str]]):
        super().__init__()
        self.title_text = title
        self.options = options

    def compose(self) -> ComposeResult:
        lines = [Text.assemble((f"{i} ", "bold cyan"), (code, "bold"), (f"  {meaning}", "dim"))
                 for i, (code, meaning) in enumerate(self.options, start=1)]
        box = VerticalScroll(Static(Text("\n").join(lines)), classes="dialog")
        box.border_title = f"{self.title_text} (digit picks, any other key cancels)"
        yield box

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        key = event.character or ""
        if key.isdigit() and 1 <= int(key) <= len(self.options):
            self.dismiss(self.options[int(key) - 1][0])
        else:
            self.dismiss(None)


class NoteScreen(ModalScreen[str]):
    """One line of text; Enter saves it, Escape (or an empty line) cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def compose(self) -> ComposeResult:
        box = Container(Input(placeholder="type a note, Enter saves (empty cancels)"), classes="dialog note")
        box.border_title = "note"
        yield box

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss("")


class MarkScreen(ModalScreen[str]):
    """The steps as a toggle list: y marks the highlighted step correct, n incorrect, space keeps it; any other
    key stops. Each mark is journaled as it is made; the screen returns what to tell the annotator."""

    def __init__(self, desk: ReviewDesk):
        super().__init__()
        self.desk = desk
        self.index = 0

    def compose(self) -> ComposeResult:
        yield VerticalScroll(Static(id="steps-list"), classes="dialog")

    def on_mount(self) -> None:
        self._draw()

    def _draw(self) -> None:
        item, view = self.desk.current, self.desk.view()
        n = len(item.steps)
        lines = []
        for i in range(n):
            line = card.step_line(item, view, i)
            if i == self.index:
                line.stylize("reverse")
            lines.append(line)
        self.query_one("#steps-list", Static).update(Text("\n").join(lines))
        self.query_one(".dialog").border_title = (
            f"step {self.index + 1} of {n}: y correct · n incorrect · space keep · other key stops")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        key = event.character
        if key in ("y", "n"):
            try:
                self.desk.mark(self.index, key == "y")
            except OSError as e:  # the journal could not be written: this mark did not count
                self.dismiss(f"NOT saved: cannot write the review journal ({e})")
                return
        elif key != " ":
            self.dismiss("steps marked")
            return
        self.index += 1
        if self.index >= len(self.desk.current.steps):
            self.dismiss("steps marked")
        else:
            self._draw()


class GuidelinesScreen(ModalScreen[None]):
    """Grade meanings, the cited rules in full and the reason codes; g or Escape goes back to the card."""

    BINDINGS = [Binding("g,G", "close", "back to the card"), Binding("escape", "close", "back to the card")]

    def __init__(self, header: Text, body: Text):
        super().__init__()
        self.header, self.body = header, body

    def compose(self) -> ComposeResult:
        yield Static(self.header, classes="header")
        box = VerticalScroll(Static(self.body), classes="dialog guidelines")
        box.border_title = "guidelines · press g to go back to the card"
        yield box
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)


class CardScreen(Screen[None]):
    """The card: header and pair on top, the panes, the decision and status lines, the key footer."""

    BINDINGS = [
        Binding("a,A", "decide('accept')", "accept"),
        Binding("r,R", "decide('reject')", "reject"),
        Binding("l,L", "decide('relabel')", "relabel"),
        Binding("e,E", "decide('edit')", "edit"),
        Binding("m,M", "decide('mark')", "mark"),
        Binding("n,N", "decide('note')", "note"),
        Binding("s,S", "decide('skip')", "skip"),
        Binding("u,U", "decide('undo')", "undo"),
        Binding("g,G", "guidelines", "guide"),
        Binding("q,Q", "app.quit", "quit"),
    ]
    KEYS = frozenset("arlemnsugq")

    def compose(self) -> ComposeResult:
        yield Static(id="header")
        yield Static(id="pair")
        with Container(id="body"):  # grid order: reasoning first (left column when wide, top when narrow)
            yield Pane("reasoning", id="steps")
            yield Pane("model answer", id="answer")
            yield Pane("retrieved rules (g: full text)", id="rules")
            yield Pane("description", id="description")
        yield Static(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.app.refresh_card()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#body").set_class(event.size.width < WIDE_FROM, "narrow")

    def on_key(self, event: events.Key) -> None:
        if event.is_printable and (event.character or "").lower() not in self.KEYS:
            self.app.say(f"unknown key {event.character!r}")

    def action_decide(self, what: str) -> None:
        self.app.decide(what)

    def action_guidelines(self) -> None:
        self.app.show_guidelines()


class ReviewApp(App[None]):
    """One annotator's sitting; exits when they quit or the queue is empty."""

    CSS = """
    #header { height: auto; max-height: 2; }
    #pair { height: auto; max-height: 6; padding: 0 1; background: $boost; }
    #body { layout: grid; grid-size: 2 3; grid-columns: 3fr 2fr; grid-rows: auto 1fr 1fr; height: 1fr; }
    #body #steps { row-span: 3; }
    #body.narrow { grid-columns: 1fr 1fr; grid-rows: 1fr auto auto; }
    #body.narrow #steps { row-span: 1; column-span: 2; }
    #body.narrow #description { column-span: 2; max-height: 4; }
    #body.narrow #answer, #body.narrow #rules { max-height: 8; }
    Pane { border: round $secondary; padding: 0 1; height: 1fr; }
    #answer { height: auto; }
    Pane:focus { border: round $accent; }
    #body.narrow Pane { border: none; border-top: solid $secondary; padding: 0; }
    #body.narrow #steps { height: 1fr; }
    #body.narrow Pane:focus { border-top: solid $accent; }
    #body.narrow #rules, #body.narrow #description { height: auto; }
    #status { height: auto; max-height: 2; }
    ModalScreen { align: center middle; }
    .dialog { width: 90%; height: auto; max-height: 80%; border: round $accent; padding: 0 1; background: $panel; }
    .dialog.note { height: 5; }
    GuidelinesScreen { align: center top; }
    .dialog.guidelines { width: 100%; height: 1fr; max-height: 100%; }
    """
    ENABLE_COMMAND_PALETTE = False  # every key is a decision key; the palette's ctrl+p would only take footer room
    # Ctrl-C ends the sitting the way it ends any cotgen command (the CLI turns return code 130 into an interrupt).
    BINDINGS = [Binding("ctrl+c", "interrupt", show=False, priority=True)]

    def __init__(self, desk: ReviewDesk, editor: Editor = run_editor):
        super().__init__()
        self.desk = desk
        self.editor = editor
        self.status = ""
        self.card_screen = CardScreen()

    def on_mount(self) -> None:
        self.push_screen(self.card_screen)

    def action_interrupt(self) -> None:
        self.exit(return_code=130)

    def say(self, message: str) -> None:
        self.status = message
        self._draw_status()

    def refresh_card(self) -> None:
        """Draw the current item; leave when there is none (queue empty)."""
        desk = self.desk
        item = desk.current
        if item is None:
            self.exit()
            return
        view, scheme = desk.view(), desk.scheme()
        screen = self.card_screen
        screen.query_one("#header", Static).update(
            card.header(item, desk.session.annotator, desk.queue, desk.session.progress()))
        screen.query_one("#pair", Static).update(card.pair(item, view, scheme))
        screen.query_one("#answer", Pane).show(card.answer(item, view, scheme))
        screen.query_one("#steps", Pane).show(card.steps(item, view), card.steps_title(item, view))
        screen.query_one("#rules", Pane).show(card.rules(desk.rules.texts(item.rule_ids)))
        screen.query_one("#description", Pane).show(card.description(item))
        self._draw_status()

    def _draw_status(self) -> None:
        if self.desk.current is None:
            return
        line = card.decision(self.desk.view())
        if self.status:
            line.append(self.status, style="bold yellow")
        if self.desk.store_error():
            line.append(f"  [store: {self.desk.store_error()}; decisions are safe in the journal]", style="red")
        self.card_screen.query_one("#status", Static).update(line)

    def _record(self, action: Callable[[], str | None]) -> None:
        """Run one desk action; a journal that cannot be written means the decision did not count."""
        try:
            message = action()
        except OSError as e:
            message = f"NOT saved: cannot write the review journal ({e})"
        if message is not None:
            self.status = message
        self.refresh_card()

    def decide(self, what: str) -> None:
        self.status = ""
        desk = self.desk
        if what in ("reject", "edit", "mark"):
            missing = desk.needs_sample(what)
            if missing:
                self.say(missing)
                return
        if what == "accept":
            self._record(desk.accept)
        elif what == "skip":
            self._record(desk.skip)
        elif what == "undo":
            self._record(desk.undo)
        elif what == "reject":
            self._pick("reject: reason", list(desk.cfg.reject_reasons.items()),
                       lambda code: self._record(lambda: desk.reject(code)))
        elif what == "relabel":
            self._relabel()
        elif what == "edit":
            self._edit()
        elif what == "mark":
            self._mark()
        elif what == "note":
            self.push_screen(NoteScreen(), lambda text: self._record(lambda: desk.note(text or "")))

    def _pick(self, title: str, options: list[tuple[str, str]], then: Callable[[str], None]) -> None:
        def picked(code: str | None) -> None:
            if code:
                then(code)
            else:
                self.say(f"{title}: cancelled")

        self.push_screen(MenuScreen(title, options), picked)

    def _relabel(self) -> None:
        desk = self.desk
        grades = [(g.id, f"{g.name}: {g.meaning}") for g in desk.scheme().grades]

        def reason(grade: str) -> None:
            self._pick(f"relabel to {grade}: reason", list(desk.cfg.relabel_reasons.items()),
                       lambda code: self._record(lambda: desk.relabel(grade, code)))

        self._pick("relabel: new gold label", grades, reason)

    def _edit(self) -> None:
        before = self.desk.answer_text()
        try:
            with self.suspend():  # the editor gets the terminal; the app redraws when it returns
                edited = self.editor(before)
        except SuspendNotSupported:  # headless (tests): nothing holds the terminal
            edited = self.editor(before)
        self._record(lambda: self.desk.save_edit(before, edited))

    def _mark(self) -> None:
        if not self.desk.current.steps:
            self.say("no parsed steps to mark")
            return
        self.push_screen(MarkScreen(self.desk), lambda message: self._record(lambda: message))

    def show_guidelines(self) -> None:
        desk = self.desk
        item = desk.current
        found = desk.rules.texts(item.rule_ids)
        body = card.guidelines(desk.scheme(), found, desk.cfg.reject_reasons, desk.cfg.relabel_reasons)
        self.push_screen(GuidelinesScreen(card.header(item, desk.session.annotator, desk.queue,
                                                      desk.session.progress()), body))
