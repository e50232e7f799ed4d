"""What every selection shares: samples with reviews applied, the policy run's difficulty, teacher answers.

Selections run on one store connection and leave their rows in temp tables (`rows_<kind>`); the export
joins prompts and splits onto them. SQL does the row work; Python only parses edits and renders answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curation.difficulty import load_current_counts
from curation.queries import sql
from curation.stats import RunInfo, compute_pair_counts, install_macros, latest_run, resolve_runs
from curation.store import Store, registered
from schemas.answer import AnswerOrder, max_ngram_repeats, parse_answer, render_answer, render_cot
from schemas.config import CotgenConfig
from schemas.sample import Step

Embed = Callable[[list[str]], np.ndarray]
RENDER_BATCH = 50_000



@dataclass
class SelectionContext:
    """One selection session: the store connection, the knobs, and the runs the rows come from."""

    store: Store
    config: CotgenConfig
    order: AnswerOrder
    teacher_runs: list[RunInfo]
    policy_run: RunInfo | None
    sources: list[str] = field(default_factory=list)
    embed: Embed | None = None

    @property
    def curation(self):
        return self.config.curation

    @property
    def runs(self) -> list[RunInfo]:
        return [*self.teacher_runs, *([self.policy_run] if self.policy_run else [])]


def pick_runs(store: Store, config: CotgenConfig) -> tuple[list[RunInfo], RunInfo | None]:
    """Teacher runs (configured names, else all) and the policy run (configured, else the latest)."""
    teachers = resolve_runs(store, config.curation.teacher_runs or None, role=None if config.curation.teacher_runs else "teacher")
    if config.curation.policy_run:
        policy = resolve_runs(store, [config.curation.policy_run])[0]
    else:
        policy = latest_run(store, "policy")
    return teachers, policy


def open_selection(store: Store, config: CotgenConfig, order: AnswerOrder, sources: list[str],
                   embed: Embed | None = None) -> SelectionContext:
    """Set up the temp tables and views every selection reads."""
    teachers, policy = pick_runs(store, config)
    ctx = SelectionContext(store, config, order, teachers, policy, sources, embed)
    cur = config.curation
    store.con.execute(sql("selection.insertion_order"))
    store.con.execute(sql("selection.create_dropped"))
    install_macros(store)
    store.con.execute(sql("selection.macros"))
    store.con.execute(sql("selection.params"), {
        "seed": str(cur.seed), "sources": sources, "teacher_runs": [r.run_id for r in teachers],
        "policy_run": policy.run_id if policy else None, "curriculum": list(cur.curriculum), "order": order,
    })
    _load_edits(ctx)
    _create_views(store, [r.run_id for r in teachers], policy.run_id if policy else None)
    if policy is None or not load_current_counts(store, policy.run_id, cur.difficulty):
        compute_pair_counts(store, [policy.run_id] if policy else [])
    store.con.execute(sql("selection.gates"), {"drop_truncated": cur.drop_truncated})
    store.con.execute(sql("selection.pair_stage"), {"gamma": cur.difficulty.gamma, "easy": cur.difficulty.easy})
    store.con.execute(sql("selection.create_teacher_answers"))
    return ctx


def _runs_filter(run_ids: list[str]) -> str:
    """A literal `s.run_id IN (...)` (quoted), so the filter reaches the scan; an empty list matches nothing."""
    quoted = ", ".join("'" + r.replace("'", "''") + "'" for r in run_ids)
    return f"s.run_id IN ({quoted})" if run_ids else "false"


def _create_views(store: Store, teacher_ids: list[str], policy_id: str | None) -> None:
    policy = [policy_id] if policy_id else []
    for view, runs in (("eff_teacher", _runs_filter(teacher_ids)), ("eff_policy", _runs_filter(policy)),
                       ("eff", "true")):
        store.con.execute(sql("selection.effective").format(view=view, runs=runs))


EDITS_SCHEMA = pa.schema([("sample_id", pa.string()), ("text", pa.string()), ("steps", pa.string()),
                          ("predicted_label", pa.string()), ("parse_status", pa.string()), ("parse_reason", pa.string()),
                          ("consistent", pa.bool_())])


def _load_edits(ctx: SelectionContext) -> None:
    """An edit is the annotator's full corrected answer: parse it like model output."""
    cols: dict[str, list] = {name: [] for name in EDITS_SCHEMA.names}
    for sample_id, text, scheme in ctx.store.rows(sql("selection.edit_texts")):
        parsed = parse_answer(text, ctx.config.scheme(scheme))
        for name, value in (("sample_id", sample_id), ("text", text),
                            ("steps", json.dumps([s.model_dump() for s in parsed.steps])),
                            ("predicted_label", parsed.label), ("parse_status", parsed.status),
                            ("parse_reason", parsed.reason), ("consistent", parsed.consistent)):
            cols[name].append(value)
    with registered(ctx.store, "edits_arrow", pa.table(cols, schema=EDITS_SCHEMA)):
        ctx.store.con.execute(sql("selection.create_edits"))


def steps_from_json(text: str | None) -> list[Step]:
    if not text:
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [Step.model_construct(name=str(s.get("name", "other")), text=str(s.get("text", ""))) for s in items
            if isinstance(s, dict)]


RENDERED_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("pair_id", pa.string()), ("gold", pa.string()), ("decision", pa.string()),
    ("edited", pa.bool_()), ("draw", pa.uint64()), ("completion", pa.string()), ("cot", pa.string()),
    ("chars", pa.int64()),
])


def render_teacher_answers(ctx: SelectionContext, all_pairs: bool) -> int:
    """Render eligible teacher answers (all pairs, or those in wanted_pairs) as training targets; an answer that
    repeats a phrase too often (curation.max_ngram_repeats) is put in sample_gates instead.

    The target is the gold label in the export's answer order with the teacher's steps: the same text
    whichever order the teacher wrote in. Returns how many answers were rendered.
    """
    rows = ctx.store.rows(sql("selection.teacher_candidates"), {"all_pairs": all_pairs})
    cur = ctx.curation
    repetitive: list[str] = []
    for start in range(0, len(rows), RENDER_BATCH):
        cols: dict[str, list] = {name: [] for name in RENDERED_SCHEMA.names}
        for sample_id, pair_id, gold, decision, edited, draw, steps_json, text in rows[start:start + RENDER_BATCH]:
            if (text is not None and cur.max_ngram_repeats is not None
                    and max_ngram_repeats(text, cur.repetition_ngram) > cur.max_ngram_repeats):
                repetitive.append(sample_id)
                continue
            steps = steps_from_json(steps_json)
            completion = render_answer(steps, gold, ctx.order)
            for name, value in (("sample_id", sample_id), ("pair_id", pair_id), ("gold", gold),
                                ("decision", decision), ("edited", edited), ("draw", draw),
                                ("completion", completion), ("cot", render_cot(steps)),
                                ("chars", len(completion))):
                cols[name].append(value)
        with registered(ctx.store, "rendered_arrow", pa.table(cols, schema=RENDERED_SCHEMA)):
            ctx.store.con.execute(sql("selection.insert_teacher_answers"))
    with registered(ctx.store, "repetitive_arrow", pa.table({"sample_id": pa.array(repetitive, pa.string())})):
        ctx.store.con.execute(sql("selection.insert_repetitive"))
    return len(rows) - len(repetitive)


DROPPED_SCHEMA = pa.schema([("kind", pa.string()), ("sample_id", pa.string()), ("pair_id", pa.string()),
                           ("reason", pa.string())])


def record_dropped(store: Store, kind: str, reason: str, pair_ids: list[str], sample_ids: list[str | None]) -> None:
    """Put rows a selection left out in Python (not in SQL) on record, with their reason."""
    n = len(pair_ids)
    table = pa.table({"kind": [kind] * n, "sample_id": sample_ids, "pair_id": pair_ids, "reason": [reason] * n},
                     schema=DROPPED_SCHEMA)
    with registered(store, "dropped_arrow", table):
        store.con.execute(sql("selection.insert_dropped"))


def dropped_counts(store: Store) -> dict[str, dict[str, int]]:
    """{kind: {reason: rows}} of everything the selections so far left out."""
    out: dict[str, dict[str, int]] = {}
    for kind, reason, n in store.rows(sql("selection.dropped_counts")):
        out.setdefault(kind, {})[reason] = int(n)
    return out


def label_cv(store: Store, table: str) -> tuple[float, int]:
    """(coefficient of variation of the label counts, number of labels) of a temp table with `label`."""
    cv, labels = store.one(sql("selection.label_cv").format(table=table))
    return float(cv), int(labels)


def label_counts(store: Store, table: str) -> dict[str, int]:
    return {label: int(n) for label, n in store.rows(sql("selection.label_counts").format(table=table))}
