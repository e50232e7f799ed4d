"""Per-step labels (TaoSR-SHE's hybrid): prompt, completions, labels, label_sources (human | judge per step).

A step's label: the reviewer's mark; else, when a reviewer accepted or edited the sample, correct (the
reviewer vouches for it); else the step judge's latest verdict (view hybrid_step_labels); else none, and a
sample with an unlabelled step is no row. Humans win over the judge; an edited sample's steps are the
reviewer's text, which the judge never saw, so the vouching covers them all.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.queries import sql
from curation.selection import SelectionContext, record_dropped, steps_from_json
from curation.store import registered
from schemas.answer import STEP_TITLES
from schemas.sample import Step

# An accepted or edited sample vouches for the steps nobody marked; otherwise every step needs a mark or a verdict.
VOUCHING = ("accept", "edit")
HUMAN, JUDGE = "human", "judge"
ROWS_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("query_id", pa.string()), ("label", pa.string()), ("sample_id", pa.string()),
    ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_())), ("label_sources", pa.list_(pa.string())),
    ("draw", pa.uint64()),
])



def step_line(position: int, step: Step) -> str:
    """One step as the answer format writes it: `2. Item understanding: ...`."""
    title = STEP_TITLES.get(step.name, step.name.replace("_", " ").capitalize())
    return f"{position}. {title}: {step.text.strip()}"


def step_labels(n_steps: int, marks: list[dict], decision: str | None) -> tuple[list[bool], list[str]] | None:
    """(label, source) per step (step_index is 0-based) by the module's precedence; None when a step has none.

    `marks` are hybrid_step_labels rows: {i, ok, source}, a human mark or else the judge's verdict.
    """
    found = {m["i"]: (bool(m["ok"]), m["source"]) for m in marks if m["i"] is not None and m["ok"] is not None}
    labelled = []
    for i in range(n_steps):
        mark = found.get(i)
        if mark is not None and mark[1] == HUMAN:
            labelled.append(mark)
        elif decision in VOUCHING:
            labelled.append((True, HUMAN))
        elif mark is not None:
            labelled.append(mark)
        else:
            return None
    return [ok for ok, _ in labelled], [source for _, source in labelled]


def select_steps(ctx: SelectionContext) -> dict[str, Any]:
    """Fill rows_steps; returns how many samples had a mark or a verdict, became rows, or lacked labels."""
    cols: dict[str, list] = {name: [] for name in ROWS_SCHEMA.names}
    incomplete: list[tuple[str, str]] = []
    candidates = ctx.store.rows(sql("steps.candidates"))
    for sample_id, pair_id, query_id, gold, steps_json, decision, draw, marks in candidates:
        steps = steps_from_json(steps_json)
        labelled = step_labels(len(steps), marks, decision) if steps else None
        if labelled is None:
            incomplete.append((pair_id, sample_id))
            continue
        labels, sources = labelled
        for name, value in (("pair_id", pair_id), ("query_id", query_id), ("label", gold), ("sample_id", sample_id),
                            ("completions", [step_line(i, s) for i, s in enumerate(steps, start=1)]),
                            ("labels", labels), ("label_sources", sources), ("draw", draw)):
            cols[name].append(value)
    with registered(ctx.store, "steps_arrow", pa.table(cols, schema=ROWS_SCHEMA)):
        ctx.store.con.execute(sql("steps.create_rows"))
    record_dropped(ctx.store, "steps", "steps_unlabelled", [p for p, _ in incomplete], [s for _, s in incomplete])
    return {"marked_samples": len(candidates), "incomplete": len(incomplete), "rows": len(cols["pair_id"])}
