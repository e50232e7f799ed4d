"""Review queues: which items an annotator sees, shared out across annotators through claims in the store.

A claim is one short write transaction (DuckDB's single-writer lock makes it atomic across processes):
it picks items nobody holds, gives overlap items (a fixed hash share of items) to two annotators, and
mixes in gold pairs at `gold_fraction`. The annotator's unfinished claims come back first (resume).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from curation.queries import sql
from curation.store import Store
from schemas.config import ReviewConfig
from schemas.errors import CotgenError, require_file
from schemas.sample import Step

QUEUE_KINDS = ("disagreements", "hard", "parse-failures", "contradictions", "judge-disagreements", "random")
PAIR_PREFIX = "pair:"


@dataclass(frozen=True)
class QueueSpec:
    """A queue kind, an optional run filter and, for `ids:FILE`, the ids in file order."""

    kind: str
    run: str | None = None
    ids_file: Path | None = None
    ids: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Names the queue in review_assignments so a session resumes its own items."""
        base = f"ids:{self.ids_file}" if self.kind == "ids" else self.kind
        return f"{base}@run={self.run}" if self.run else base


def _read_ids(path: Path) -> tuple[str, ...]:
    require_file(path, " (queue ids:FILE wants one sample or pair id per line)")
    ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return tuple(i for i in ids if i and not i.startswith("#"))


def parse_queue(text: str, run: str | None = None) -> QueueSpec:
    """`random`, `hard`, ..., or `ids:FILE`; unknown names are a one-line error listing the known ones."""
    if text.startswith("ids:"):
        path = Path(text[4:]).expanduser().resolve()
        return QueueSpec(kind="ids", run=run, ids_file=path, ids=_read_ids(path))
    if text not in QUEUE_KINDS:
        raise CotgenError(f"--queue: unknown queue '{text}' (known: {', '.join(QUEUE_KINDS)}, ids:FILE)")
    return QueueSpec(kind=text, run=run)


def _params(sql: str, values: dict[str, object]) -> dict[str, object]:
    """Only the named parameters `sql` uses (DuckDB rejects extra ones)."""
    return {k: v for k, v in values.items() if re.search(rf"\${k}\b", sql)}


def _run(store: Store, sql: str, values: dict[str, object]) -> list[tuple]:
    return store.rows(sql, _params(sql, values))


def _register_ids(store: Store, spec: QueueSpec) -> None:
    table = pa.table({"pos": list(range(len(spec.ids))), "id": list(spec.ids)})
    store.con.register("review_ids", table)


def check_ids(store: Store, spec: QueueSpec) -> None:
    """Every id of an ids:FILE queue must name a sample or a pair; the error names the line."""
    if spec.kind != "ids":
        return
    _register_ids(store, spec)
    known = {r[0] for r in store.rows(sql("review.ids_existing"))}
    lines = [line.strip() for line in spec.ids_file.read_text(encoding="utf-8").splitlines()]
    for n, line in enumerate(lines, start=1):
        if line and not line.startswith("#") and line not in known:
            raise CotgenError(f"{spec.ids_file}:{n}: id: '{line}' is neither a sample id nor a pair id in the store")


@dataclass(frozen=True)
class ClaimContext:
    """Who claims, from which queue, with which knobs."""

    annotator: str
    spec: QueueSpec
    config: ReviewConfig
    seed: int
    gamma: float

    def values(self, now: datetime) -> dict[str, object]:
        cutoff = now - timedelta(minutes=self.config.claim_expiry_minutes)
        return {"annotator": self.annotator, "run": self.spec.run, "seed": str(self.seed), "gamma": self.gamma,
                "overlap": self.config.overlap, "cutoff": cutoff, "queue": self.spec.key}


def _claim_sql(kind: str, *, count_only: bool = False) -> str:
    """The claim statement of a queue kind (`review.claimable` with the kind's candidates)."""
    claimable_sql = sql("review.claimable").format(candidates=sql(f"review.candidates_{kind.replace('-', '_')}"))
    return sql("review.claimable_count" if count_only else "review.claim").format(claimable=claimable_sql)


def claimable(store: Store, ctx: ClaimContext, now: datetime) -> int:
    """How many more items this annotator could claim from the queue right now."""
    if ctx.spec.kind == "ids":
        _register_ids(store, ctx.spec)
    return _run(store, _claim_sql(ctx.spec.kind, count_only=True), ctx.values(now))[0][0]


def unfinished(store: Store, ctx: ClaimContext) -> list[str]:
    """Item keys this annotator claimed from this queue and has not finished, in claim order (resume)."""
    return [r[0] for r in _run(store, sql("review.unfinished"), {"annotator": ctx.annotator, "queue": ctx.spec.key})]


def _gold_share(have_gold: int, regular_total: int, fraction: float) -> int:
    """Gold items owed so that gold / all stays at `fraction`."""
    if fraction <= 0:
        return 0
    return max(0, int(regular_total * fraction / (1 - fraction)) - have_gold)


def _interleave(regular: list[tuple], gold: list[tuple]) -> list[tuple[tuple, bool]]:
    """Gold items spread evenly through the regular ones, so an annotator cannot spot them by position."""
    out = [(r, False) for r in regular]
    for j, g in enumerate(gold):  # + j: the gold items already inserted before this one
        out.insert(round((j + 1) * len(regular) / (len(gold) + 1)) + j, (g, True))
    return out


def claim(store: Store, ctx: ClaimContext, k: int, now: datetime) -> list[str]:
    """Claim up to k items (gold mixed in) in one transaction; returns their keys in review order."""
    if k <= 0:
        return []
    values = {**ctx.values(now), "k": k}
    with store.transaction() as con:
        if ctx.spec.kind == "ids":
            _register_ids(store, ctx.spec)
        regular = _run(store, _claim_sql(ctx.spec.kind), values)
        have_gold, have_regular, last = _run(store, sql("review.my_counts"), values)[0]
        owed = _gold_share(have_gold, have_regular + len(regular), ctx.config.gold_fraction)
        gold = _run(store, sql("review.gold_items"), {**values, "n": owed}) if owed else []
        gold_keys = {g[0] for g in gold}
        regular = [r for r in regular if r[0] not in gold_keys][: max(0, k - len(gold))]
        chosen = _interleave(regular, [(*g, False) for g in gold])
        for pos, (row, is_gold) in enumerate(chosen, start=last + 1):
            item_key, pair_id, sample_id, overlap = row
            con.execute(sql("review.insert_assignment"), [ctx.annotator, item_key, pair_id, sample_id, ctx.spec.key, pos,
                                                bool(overlap), is_gold, now])
    return [row[0] for row, _ in chosen]


@dataclass
class ReviewItem:
    """Everything a card shows for one item: the pair and, unless the item is a pair alone, one sample."""

    item_key: str
    pair_id: str
    sample_id: str | None
    is_gold: bool
    query: str
    title: str
    description: str
    attributes: dict[str, str]
    gold_label: str
    scheme: str
    source: str
    run_name: str | None = None
    answer_order: str = "cot_first"
    predicted_label: str | None = None
    label_probs: dict[str, float] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    parse_status: str | None = None
    parse_reason: str = ""
    consistent: bool = True
    raw_text: str = ""
    rule_ids: list[str] = field(default_factory=list)


def _json(value: object, default: object) -> object:
    if value is None:
        return default
    return json.loads(value) if isinstance(value, str) else value


def _steps(value: object) -> list[Step]:
    raw = _json(value, [])
    return [Step.model_validate(s) for s in raw] if isinstance(raw, list) else []


def _order(run_order: str | None, raw_text: str) -> str:
    if run_order in ("cot_first", "label_first"):
        return run_order
    first = next((line for line in raw_text.splitlines() if line.strip()), "")
    return "label_first" if first.strip().lower().startswith("label") else "cot_first"


def _row_item(row: tuple) -> ReviewItem:
    (key, pair_id, sample_id, gold, query, title, description, attributes, label, scheme, source, run_name,
     run_order, predicted, probs, steps, status, reason, consistent, text, rule_ids) = row
    attrs = _json(attributes, {})
    ids = _json(rule_ids, [])
    return ReviewItem(
        item_key=key, pair_id=pair_id, sample_id=sample_id, is_gold=bool(gold), query=query, title=title,
        description=description or "", attributes={str(k): str(v) for k, v in (attrs or {}).items()},
        gold_label=label, scheme=scheme, source=source, run_name=run_name, answer_order=_order(run_order, text or ""),
        predicted_label=predicted, label_probs={str(k): float(v) for k, v in (_json(probs, {}) or {}).items()},
        steps=_steps(steps), parse_status=status, parse_reason=reason or "",
        consistent=True if consistent is None else bool(consistent), raw_text=text or "",
        rule_ids=[str(i) for i in ids or []],
    )


def load_items(store: Store, annotator: str, keys: list[str]) -> list[ReviewItem]:
    """Card data for the annotator's assigned items, in the order of `keys`."""
    if not keys:
        return []
    by_key = {r[0]: _row_item(r) for r in _run(store, sql("review.items"), {"annotator": annotator, "keys": keys})}
    return [by_key[k] for k in keys if k in by_key]


def add_gold(store: Store, rows: list[tuple[str, str, str]], added_by: str, schemes: dict[str, list[str]],
             origin: str, lines: list[int] | None = None) -> int:
    """Mark pairs as gold with a trusted label; rows are (pair_id, label, note), checked before any write.

    Errors name `origin` and the row's line there (`lines`; default: its position, from 1).
    """
    found = dict(store.rows(sql("review.pairs_scheme"), [[r[0] for r in rows]]))
    for n, (pair_id, label, _) in zip(lines or range(1, len(rows) + 1), rows, strict=True):
        if pair_id not in found:
            raise CotgenError(f"{origin}:{n}: pair_id: '{pair_id}' is not a pair in the store")
        grades = schemes[found[pair_id]]
        if label not in grades:
            raise CotgenError(f"{origin}:{n}: label: '{label}' is not a grade of scheme {found[pair_id]} "
                              f"({', '.join(grades)})")
    with store.transaction() as con:
        for pair_id, label, note in rows:
            con.execute(sql("review.gold_upsert"), [pair_id, label, added_by, note])
    return len(rows)
