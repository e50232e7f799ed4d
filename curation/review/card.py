"""The review card and the guidelines pane, as rich renderables (drawing only; keys live in the command)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from curation.review.queue import ReviewItem
from curation.review.session import ItemView, Progress
from schemas.answer import STEP_TITLES
from schemas.labels import LabelScheme

KEYS_HELP = ("a accept · r reject · l relabel · e edit ($EDITOR) · m mark steps · n note · s skip · "
             "u undo · g guidelines · q quit")
BAR_WIDTH = 20


@dataclass
class RuleText:
    """A retrieved rule as the card shows it; `text` is empty when the index could not be read."""

    id: str
    title: str = ""
    text: str = ""


@dataclass
class CardFrame:
    """Everything around the item: who, which queue, how far, and the last message or open menu."""

    annotator: str
    queue: str
    progress: Progress
    scheme: LabelScheme
    rules: list[RuleText]
    status: str = ""
    menu: RenderableType | None = None


def header(item: ReviewItem, frame: CardFrame) -> Text:
    p = frame.progress
    rate = ""
    if p.median_s is not None:
        rate = f" · median {p.median_s:.1f} s/item"
    if p.per_hour is not None:
        rate += f" · {p.per_hour:.0f} items/h"
    line = Text(f"cotgen review · {frame.annotator} · {frame.queue} · ", style="bold")
    line.append(f"item {p.position} of {p.total} · id {item.item_key}", style="bold cyan")
    line.append(f" · done {p.done}{rate}", style="dim")
    return line


def _grade(scheme: LabelScheme, grade_id: str | None) -> str:
    if grade_id is None:
        return "none"
    try:
        return f"{grade_id} {scheme.grade(grade_id).name}"
    except KeyError:
        return grade_id


def pair_panel(item: ReviewItem, view: ItemView, scheme: LabelScheme) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("query", Text(item.query, style="bold yellow"))
    grid.add_row("title", Text(item.title))
    if item.description:
        grid.add_row("description", Text(item.description))
    for k, v in item.attributes.items():
        grid.add_row(f"· {k}", Text(v))
    gold = Text(_grade(scheme, item.gold_label), style="bold")
    if view.relabel is not None:
        gold.append(f"  → your relabel: {_grade(scheme, view.relabel.new_label)} ({view.relabel.reason})",
                    style="bold magenta")
    grid.add_row("gold label", gold)
    grid.add_row("source", Text(f"{item.source} · pair {item.pair_id}", style="dim"))
    return Panel(grid, title="pair", title_align="left")


def _bar(p: float) -> str:
    filled = round(max(0.0, min(1.0, p)) * BAR_WIDTH)
    return "█" * filled + "·" * (BAR_WIDTH - filled)


def model_panel(item: ReviewItem, view: ItemView, scheme: LabelScheme) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    if item.sample_id is None:
        grid.add_row("sample", Text("none: this card is the pair alone (accept confirms the gold label)", style="dim"))
        return Panel(grid, title="model", title_align="left")
    gold = view.relabel.new_label if view.relabel is not None else item.gold_label
    agrees = item.predicted_label == gold
    grid.add_row("predicted", Text(_grade(scheme, item.predicted_label), style="bold green" if agrees else "bold red"))
    for grade in scheme.ids:
        if grade in item.label_probs:
            p = item.label_probs[grade]
            grid.add_row(f"  P({grade})", Text(f"{_bar(p)} {p:.3f}"))
    status = item.parse_status or "?"
    parse = Text(status, style="green" if status == "ok" else "red")
    if item.parse_reason:
        parse.append(f" ({item.parse_reason})", style="dim")
    grid.add_row("parse", parse)
    if not item.consistent:
        grid.add_row("", Text("the judgement step contradicts the final label", style="bold red"))
    grid.add_row("run", Text(f"{item.run_name} · sample {item.sample_id}", style="dim"))
    return Panel(grid, title="model", title_align="left")


def rules_panel(rules: list[RuleText]) -> Panel:
    if not rules:
        return Panel(Text("no retrieved rules recorded for this sample", style="dim"), title="rules", title_align="left")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column()
    for r in rules:
        grid.add_row(Text(r.id), Text(r.title) if r.title else Text("(text not available: build the index)", style="dim"))
    return Panel(grid, title="retrieved rules (g: full text)", title_align="left")


def reasoning_panel(item: ReviewItem, view: ItemView) -> Panel:
    if view.edit is not None and view.edit.edited_text:
        return Panel(Text(view.edit.edited_text), title="reasoning (your edit)", title_align="left",
                     border_style="magenta")
    if not item.steps:
        raw = item.raw_text or "(no text)"
        return Panel(Text(raw), title="raw output (no steps parsed)", title_align="left", border_style="red")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    for i, step in enumerate(item.steps):
        mark = view.marks.get(i)
        sign = Text("✓", style="bold green") if mark else Text("✗", style="bold red") if mark is False else Text("·")
        title = STEP_TITLES.get(step.name, step.name.replace("_", " ").capitalize())
        body = Text(f"{i + 1}. ", style="bold")
        body.append(f"{title}: ", style="bold")
        body.append(step.text)
        grid.add_row(sign, body)
    return Panel(grid, title="reasoning", title_align="left")


def decision_line(view: ItemView) -> Text:
    line = Text()
    d = view.decision
    if d is not None:
        line.append(f"your decision: {d.action}", style="bold")
        if d.reason:
            line.append(f" ({d.reason})")
        line.append("   ")
    for note in view.notes:
        line.append(f"note: {note}   ", style="italic")
    return line


def render_card(item: ReviewItem, view: ItemView, frame: CardFrame) -> RenderableType:
    """The full-screen card for one item."""
    body = Table.grid(expand=True, padding=(0, 1))
    body.add_column(ratio=2)
    body.add_column(ratio=3)
    left = Group(pair_panel(item, view, frame.scheme), model_panel(item, view, frame.scheme), rules_panel(frame.rules))
    body.add_row(left, reasoning_panel(item, view))
    parts: list[RenderableType] = [header(item, frame), body, decision_line(view)]
    if frame.menu is not None:
        parts.append(frame.menu)
    parts.append(Text(frame.status, style="bold yellow") if frame.status else Text(""))
    parts.append(Text(KEYS_HELP, style="dim"))
    return Group(*parts)


def render_guidelines(item: ReviewItem, frame: CardFrame, reject: dict[str, str],
                      relabel: dict[str, str]) -> RenderableType:
    """Grade meanings, the cited rules in full, and the reason codes; `g` goes back to the card."""
    grades = Table(title=f"grades ({frame.scheme.name}), best first", title_justify="left", expand=True)
    grades.add_column("grade", no_wrap=True)
    grades.add_column("name", no_wrap=True)
    grades.add_column("meaning")
    for g in frame.scheme.grades:
        relevant = " (relevant)" if frame.scheme.is_relevant(g.id) else ""
        grades.add_row(Text(g.id), Text(g.name + relevant), Text(g.meaning))
    rules = [Panel(Text(r.text or "(text not available: build the index with `cotgen index build`)"),
                   title=escape(f"{r.id} · {r.title}"), title_align="left") for r in frame.rules]
    codes = Table(title="reason codes", title_justify="left", expand=True)
    codes.add_column("kind", no_wrap=True)
    codes.add_column("code", no_wrap=True)
    codes.add_column("meaning")
    for kind, table in (("reject", reject), ("relabel", relabel)):
        for code, meaning in table.items():
            codes.add_row(kind, Text(code), Text(meaning))
    return Group(header(item, frame), Text("guidelines · press g to go back to the card", style="bold"),
                 grades, *rules, codes)


def menu(title: str, options: list[tuple[str, str]]) -> Panel:
    """A numbered single-key menu: digit i picks option i; any other key cancels."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(style="dim")
    for i, (code, meaning) in enumerate(options, start=1):
        grid.add_row(str(i), Text(code), Text(meaning))
    return Panel(grid, title=f"{title} (digit picks, any other key cancels)", title_align="left", border_style="cyan")
