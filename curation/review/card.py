"""What a review card says, section by section, as rich Text; the terminal app (cotgen.tui) lays it out."""

from __future__ import annotations

from dataclasses import dataclass

from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from curation.review.queue import ReviewItem
from curation.review.session import ItemView, Progress
from schemas.answer import STEP_TITLES
from schemas.labels import LabelScheme

BAR_WIDTH = 20


@dataclass
class RuleText:
    """A retrieved rule as the card shows it; `text` is empty when the index could not be read."""

    id: str
    title: str = ""
    text: str = ""


def header(item: ReviewItem, annotator: str, queue: str, p: Progress) -> Text:
    """Where in the queue (item i of n), this annotator's pace, then who and which queue."""
    line = Text(f"item {p.position} of {p.total} · id {item.item_key}", style="bold cyan")
    rate = f" · done {p.done}"
    if p.median_s is not None:
        rate += f" · median {p.median_s:.1f} s/item"
    if p.per_hour is not None:
        rate += f" · {p.per_hour:.0f} items/h"
    line.append(rate)
    line.append(f" · {annotator} · {queue}", style="dim")
    return line


def grade_name(scheme: LabelScheme, grade_id: str | None) -> str:
    if grade_id is None:
        return "none"
    try:
        return f"{grade_id} {scheme.grade(grade_id).name}"
    except KeyError:
        return grade_id


def pair(item: ReviewItem, view: ItemView, scheme: LabelScheme) -> Text:
    """The pair being judged: query, title, gold label (and this annotator's relabel), source."""
    out = Text()
    out.append("query  ", style="bold")
    out.append(item.query, style="bold yellow")
    out.append("\ntitle  ", style="bold")
    out.append(item.title)
    out.append("\ngold   ", style="bold")
    out.append(grade_name(scheme, item.gold_label), style="bold")
    if view.relabel is not None:
        out.append(f"  → your relabel: {grade_name(scheme, view.relabel.new_label)} ({view.relabel.reason})",
                   style="bold magenta")
    out.append(f"  · source {item.source} · pair {item.pair_id}", style="dim")
    if item.is_gold:
        out.append(" · gold item", style="dim")
    return out


def description(item: ReviewItem) -> Text:
    """The item's description and attributes."""
    out = Text(item.description or "(no description)", style="" if item.description else "dim")
    for k, v in item.attributes.items():
        out.append(f"\n· {k}: ", style="bold")
        out.append(v)
    return out


def bar(p: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(1.0, p)) * width)
    return "█" * filled + "·" * (width - filled)


def answer(item: ReviewItem, view: ItemView, scheme: LabelScheme) -> Text:
    """The model's answer: predicted grade, label probabilities as bars, parse status, run."""
    if item.sample_id is None:
        return Text("no sample: this card is the pair alone (accept confirms the gold label)", style="dim")
    gold = view.relabel.new_label if view.relabel is not None else item.gold_label
    out = Text()
    out.append("predicted ", style="bold")
    out.append(grade_name(scheme, item.predicted_label),
               style="bold green" if item.predicted_label == gold else "bold red")
    for grade in scheme.ids:
        if grade in item.label_probs:
            p = item.label_probs[grade]
            out.append(f"\nP({grade}) {bar(p)} {p:.3f}")
    status = item.parse_status or "?"
    out.append("\nparse ", style="bold")
    out.append(status, style="green" if status == "ok" else "red")
    if item.parse_reason:
        out.append(f" ({item.parse_reason})", style="dim")
    if not item.consistent:
        out.append("\nthe judgement step contradicts the final label", style="bold red")
    out.append(f"\nrun {item.run_name} · sample {item.sample_id}", style="dim")
    return out


def steps_title(item: ReviewItem, view: ItemView) -> str:
    if view.edit is not None and view.edit.edited_text:
        return "reasoning (your edit)"
    return "reasoning" if item.steps else "raw output (no steps parsed)"


def step_line(item: ReviewItem, view: ItemView, i: int) -> Text:
    """One CoT step with this annotator's mark: ✓ correct, ✗ incorrect, · unmarked."""
    step = item.steps[i]
    mark = view.marks.get(i)
    out = Text("✓ ", style="bold green") if mark else Text("✗ ", style="bold red") if mark is False else Text("· ")
    out.append(f"{i + 1}. {STEP_TITLES.get(step.name, step.name.replace('_', ' ').capitalize())}: ", style="bold")
    out.append(step.text)
    return out


def steps(item: ReviewItem, view: ItemView) -> Text:
    """The CoT steps (or this annotator's edit, or the raw output when nothing parsed)."""
    if view.edit is not None and view.edit.edited_text:
        return Text(view.edit.edited_text)
    if not item.steps:
        return Text(item.raw_text or "(no text)")
    return Text("\n").join(step_line(item, view, i) for i in range(len(item.steps)))


def rules(found: list[RuleText]) -> Text | Table:
    """Retrieved rules: the id, then its title indented below it (wrapped, never cut)."""
    if not found:
        return Text("no retrieved rules recorded for this sample", style="dim")
    grid = Table.grid()
    for r in found:
        grid.add_row(Text(r.id, style="bold cyan"))
        title = Text(r.title) if r.title else Text("(text not available: build the index)", style="dim")
        grid.add_row(Padding(title, (0, 0, 0, 2)))
    return grid


def decision(view: ItemView) -> Text:
    """This annotator's standing decision and notes on the card."""
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


def guidelines(scheme: LabelScheme, found: list[RuleText], reject: dict[str, str], relabel: dict[str, str]) -> Text:
    """Grade meanings, the cited rules in full, and the reason codes."""
    out = Text(f"grades ({scheme.name}), best first\n", style="bold underline")
    for g in scheme.grades:
        relevant = " (relevant)" if scheme.is_relevant(g.id) else ""
        out.append(f"{g.id} {g.name}{relevant}: ", style="bold")
        out.append(f"{g.meaning}\n")
    for r in found:
        out.append(f"\n{r.id} · {r.title}\n" if r.title else f"\n{r.id}\n", style="bold cyan")
        out.append(f"{r.text or '(text not available: build the index with `cotgen index build`)'}\n")
    out.append("\nreason codes\n", style="bold underline")
    for kind, table in (("reject", reject), ("relabel", relabel)):
        for code, meaning in table.items():
            out.append(f"{kind} {code}: ", style="bold")
            out.append(f"{meaning}\n")
    return out
