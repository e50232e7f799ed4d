"""Per-step labels (TaoSR-SHE's offline verifier) from reviewers' step marks: prompt, completions, labels."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.queries import sql
from curation.selection import SelectionContext, record_dropped, registered, steps_from_json
from schemas.answer import STEP_TITLES
from schemas.sample import Step

# An accepted or edited sample vouches for the steps nobody marked; otherwise every step needs a mark.
VOUCHING = ("accept", "edit")
ROWS_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("query_id", pa.string()), ("label", pa.string()), ("sample_id", pa.string()),
    ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_())), ("draw", pa.uint64()),
])



def step_line(position: int, step: Step) -> str:
    """One step as the answer format writes it: `2. Item understanding: ...`."""
    title = STEP_TITLES.get(step.name, step.name.replace("_", " ").capitalize())
    return f"{position}. {title}: {step.text.strip()}"


def step_labels(n_steps: int, marks: list[dict], decision: str | None) -> list[bool] | None:
    """Per-step labels (step_index is 0-based), or None when some step has no label."""
    marked = {m["i"]: m["ok"] for m in marks if m["i"] is not None and m["ok"] is not None}
    default = True if decision in VOUCHING else None
    labels = [marked.get(i, default) for i in range(n_steps)]
    return None if any(v is None for v in labels) else [bool(v) for v in labels]


def select_steps(ctx: SelectionContext) -> dict[str, Any]:
    """Fill rows_steps; returns how many marked samples became rows and how many lacked labels."""
    cols: dict[str, list] = {name: [] for name in ROWS_SCHEMA.names}
    incomplete: list[tuple[str, str]] = []
    candidates = ctx.store.rows(sql("steps.candidates"))
    for sample_id, pair_id, query_id, gold, steps_json, decision, draw, marks in candidates:
        steps = steps_from_json(steps_json)
        labels = step_labels(len(steps), marks, decision) if steps else None
        if labels is None:
            incomplete.append((pair_id, sample_id))
            continue
        for name, value in (("pair_id", pair_id), ("query_id", query_id), ("label", gold), ("sample_id", sample_id),
                            ("completions", [step_line(i, s) for i, s in enumerate(steps, start=1)]),
                            ("labels", labels), ("draw", draw)):
            cols[name].append(value)
    with registered(ctx.store, "steps_arrow", pa.table(cols, schema=ROWS_SCHEMA)):
        ctx.store.con.execute(sql("steps.create_rows"))
    record_dropped(ctx.store, "steps", "steps_unlabelled", [p for p, _ in incomplete], [s for _, s in incomplete])
    return {"marked_samples": len(candidates), "incomplete": len(incomplete), "rows": len(cols["pair_id"])}
