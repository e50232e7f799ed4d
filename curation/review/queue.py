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

from curation.store import Store
from schemas.config import ReviewConfig
from schemas.errors import CotgenError, require_file
from schemas.sample import Step

QUEUE_KINDS = ("disagreements", "hard", "parse-failures", "contradictions", "random")
PAIR_PREFIX = "pair:"

# Samples of the chosen run(s) with the current gold label; query_order keeps a query's items together.
BASE_CTE = """
base AS (
    SELECT s.sample_id AS item_key, s.pair_id, s.sample_id, s.run_id, s.sample_index, s.predicted_label,
           s.parse_status, s.consistent, g.label AS gold, md5($seed || g.query_id) AS query_order
    FROM samples s JOIN runs r USING (run_id) JOIN gold_pairs g USING (pair_id)
    WHERE $run::VARCHAR IS NULL OR r.name = $run
)"""
# Per queue: extra CTEs after `base`, and the SELECT of (item_key, pair_id, sample_id, k1..k4 sort keys).
QUEUES: dict[str, tuple[str, str]] = {
    # Model and gold disagree, or the source itself gave the pair conflicting labels.
    "disagreements": ("", """
SELECT item_key, pair_id, sample_id, 0.0 AS k1, query_order AS k2, pair_id AS k3, sample_index AS k4 FROM base
WHERE (predicted_label IS NOT NULL AND predicted_label <> gold)
   OR pair_id IN (SELECT pair_id FROM label_disagreements)
UNION ALL
SELECT 'pair:' || g.pair_id, g.pair_id, NULL, 0.0, md5($seed || g.query_id), g.pair_id, 0 FROM gold_pairs g
WHERE g.pair_id IN (SELECT pair_id FROM label_disagreements) AND g.pair_id NOT IN (SELECT pair_id FROM base)"""),
    # TaoSR1's hard bin per (pair, run): 0 < c <= gamma * n correct samples; the rarest successes first.
    "hard": (""",
per AS (SELECT pair_id, run_id, count_if(predicted_label = gold) AS c, count(*) AS n FROM base GROUP BY ALL)""", """
SELECT b.item_key, b.pair_id, b.sample_id, per.c / per.n AS k1, b.query_order AS k2, b.pair_id AS k3,
       b.sample_index AS k4
FROM base b JOIN per USING (pair_id, run_id)
WHERE per.c > 0 AND per.c <= $gamma * per.n"""),
    "parse-failures": ("", """
SELECT item_key, pair_id, sample_id,
       CASE parse_status WHEN 'error' THEN 0 WHEN 'empty' THEN 1 WHEN 'no_label' THEN 2 ELSE 3 END::DOUBLE AS k1,
       query_order AS k2, pair_id AS k3, sample_index AS k4
FROM base WHERE parse_status <> 'ok'"""),
    # The judgement step names another grade than the final label.
    "contradictions": ("", """
SELECT item_key, pair_id, sample_id, 0.0 AS k1, query_order AS k2, pair_id AS k3, sample_index AS k4
FROM base WHERE NOT consistent"""),
    "random": ("", """
SELECT item_key, pair_id, sample_id, 0.0 AS k1, md5($seed || item_key) AS k2, pair_id AS k3, sample_index AS k4
FROM base"""),
    # Ids from a file, in file order: a sample id, or a pair id (its samples, or the pair alone).
    "ids": ("", """
SELECT b.item_key, b.pair_id, b.sample_id, min(i.pos)::DOUBLE AS k1, '' AS k2, b.pair_id AS k3,
       b.sample_index AS k4
FROM base b JOIN review_ids i ON i.id = b.sample_id OR i.id = b.pair_id
GROUP BY ALL
UNION ALL
SELECT 'pair:' || p.pair_id, p.pair_id, NULL, i.pos::DOUBLE, '', p.pair_id, 0
FROM pairs p JOIN review_ids i ON i.id = p.pair_id
WHERE p.pair_id NOT IN (SELECT pair_id FROM base)"""),
}
# A stable share in [0, 1) per item: items below the overlap fraction go to two annotators.
OVERLAP_EXPR = "(('0x' || substr(md5('overlap:' || {key}), 1, 8))::UBIGINT / 4294967296.0)"
CLAIM_SQL = """
WITH {base}{extra},
cand AS ({select}),
held AS (  -- live claims: not expired, not skipped by their holder
    SELECT a.annotator, a.item_key FROM review_assignments a
    ANTI JOIN (SELECT annotator, item_key FROM review_item_decisions WHERE action = 'skip') k
        USING (annotator, item_key)
    WHERE NOT a.gold AND a.assigned_at >= $cutoff
),
takers AS (
    SELECT item_key, count(*) AS n FROM (
        SELECT annotator, item_key FROM review_item_decisions WHERE action <> 'skip'
        UNION SELECT annotator, item_key FROM held
    ) GROUP BY item_key
),
mine AS (
    SELECT item_key FROM review_assignments WHERE annotator = $annotator
    UNION SELECT item_key FROM review_item_decisions WHERE annotator = $annotator
)
SELECT c.item_key, c.pair_id, c.sample_id, {overlap} < $overlap AS overlap
FROM cand c LEFT JOIN takers t USING (item_key) ANTI JOIN mine m USING (item_key)
WHERE coalesce(t.n, 0) < CASE WHEN {overlap} < $overlap THEN 2 ELSE 1 END
ORDER BY c.k1, c.k2, c.k3, c.k4, c.item_key
"""
# Gold pairs this annotator has not had, each shown with one sample of the chosen run(s) when there is one.
GOLD_SQL = """
WITH pick AS (
    SELECT s.pair_id, arg_min(s.sample_id, md5($seed || s.sample_id)) AS sample_id
    FROM samples s JOIN runs r USING (run_id)
    WHERE ($run::VARCHAR IS NULL OR r.name = $run) AND s.pair_id IN (SELECT pair_id FROM review_gold)
    GROUP BY s.pair_id
)
SELECT coalesce(p.sample_id, 'pair:' || g.pair_id) AS item_key, g.pair_id, p.sample_id
FROM review_gold g JOIN pairs USING (pair_id) LEFT JOIN pick p USING (pair_id)
WHERE g.pair_id NOT IN (SELECT pair_id FROM review_assignments WHERE annotator = $annotator AND gold)
  AND coalesce(p.sample_id, 'pair:' || g.pair_id) NOT IN
      (SELECT item_key FROM review_assignments WHERE annotator = $annotator)
ORDER BY md5($seed || $annotator || g.pair_id)
LIMIT $n
"""
MY_COUNTS_SQL = """
SELECT coalesce(count_if(gold), 0), coalesce(count_if(NOT gold), 0), coalesce(max(position), 0)
FROM review_assignments WHERE annotator = $annotator
"""
INSERT_ASSIGNMENT_SQL = """
INSERT INTO review_assignments (annotator, item_key, pair_id, sample_id, queue, position, overlap, gold, assigned_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
UNFINISHED_SQL = """
SELECT item_key FROM review_assignments
WHERE annotator = $annotator AND queue = $queue
  AND item_key NOT IN (SELECT item_key FROM review_item_decisions WHERE annotator = $annotator)
ORDER BY position
"""
ITEMS_SQL = """
SELECT a.item_key, a.pair_id, a.sample_id, a.gold, p.query, p.title, p.description, p.attributes, p.label,
       p.scheme, p.source, r.name AS run_name, json_extract_string(r.params, '$.order') AS run_order,
       s.predicted_label, s.label_probs, s.steps, s.parse_status, s.parse_reason, s.consistent, c.text,
       {rule_ids} AS rule_ids
FROM review_assignments a
JOIN pairs p USING (pair_id)
LEFT JOIN samples s ON s.sample_id = a.sample_id
LEFT JOIN runs r ON r.run_id = s.run_id
LEFT JOIN completions c ON c.request_key = s.sample_id
WHERE a.annotator = $annotator AND a.item_key IN (SELECT unnest($keys::VARCHAR[]))
"""
SAMPLE_COLUMN_SQL = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'samples' AND column_name = ?"
IDS_EXISTING_SQL = """
SELECT i.id FROM review_ids i
WHERE i.id IN (SELECT sample_id FROM samples) OR i.id IN (SELECT pair_id FROM pairs)
"""


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
    known = {r[0] for r in store.rows(IDS_EXISTING_SQL)}
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
    extra, select = QUEUES[kind]
    sql = CLAIM_SQL.format(base=BASE_CTE, extra=extra, select=select, overlap=OVERLAP_EXPR.format(key="c.item_key"))
    return f"SELECT count(*) FROM ({sql})" if count_only else sql + "LIMIT $k"


def claimable(store: Store, ctx: ClaimContext, now: datetime) -> int:
    """How many more items this annotator could claim from the queue right now."""
    if ctx.spec.kind == "ids":
        _register_ids(store, ctx.spec)
    return _run(store, _claim_sql(ctx.spec.kind, count_only=True), ctx.values(now))[0][0]


def unfinished(store: Store, ctx: ClaimContext) -> list[str]:
    """Item keys this annotator claimed from this queue and has not finished, in claim order (resume)."""
    return [r[0] for r in _run(store, UNFINISHED_SQL, {"annotator": ctx.annotator, "queue": ctx.spec.key})]


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
        have_gold, have_regular, last = _run(store, MY_COUNTS_SQL, values)[0]
        owed = _gold_share(have_gold, have_regular + len(regular), ctx.config.gold_fraction)
        gold = _run(store, GOLD_SQL, {**values, "n": owed}) if owed else []
        gold_keys = {g[0] for g in gold}
        regular = [r for r in regular if r[0] not in gold_keys][: max(0, k - len(gold))]
        chosen = _interleave(regular, [(*g, False) for g in gold])
        for pos, (row, is_gold) in enumerate(chosen, start=last + 1):
            item_key, pair_id, sample_id, overlap = row
            con.execute(INSERT_ASSIGNMENT_SQL, [ctx.annotator, item_key, pair_id, sample_id, ctx.spec.key, pos,
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
    # samples.rule_ids comes with the generation migration; stores made before it show no rules.
    has_rules = store.scalar(SAMPLE_COLUMN_SQL, ["rule_ids"])
    sql = ITEMS_SQL.format(rule_ids="s.rule_ids" if has_rules else "NULL")
    by_key = {r[0]: _row_item(r) for r in _run(store, sql, {"annotator": annotator, "keys": keys})}
    return [by_key[k] for k in keys if k in by_key]


GOLD_UPSERT_SQL = "INSERT OR REPLACE INTO review_gold (pair_id, label, added_by, note) VALUES (?, ?, ?, ?)"
GOLD_PAIRS_SQL = "SELECT pair_id, scheme FROM pairs WHERE pair_id IN (SELECT unnest(?::VARCHAR[]))"


def add_gold(store: Store, rows: list[tuple[str, str, str]], added_by: str, schemes: dict[str, list[str]],
             origin: str) -> int:
    """Mark pairs as gold with a trusted label; rows are (pair_id, label, note), checked before any write."""
    found = dict(store.rows(GOLD_PAIRS_SQL, [[r[0] for r in rows]]))
    for n, (pair_id, label, _) in enumerate(rows, start=1):
        if pair_id not in found:
            raise CotgenError(f"{origin}:{n}: pair_id: '{pair_id}' is not a pair in the store")
        grades = schemes[found[pair_id]]
        if label not in grades:
            raise CotgenError(f"{origin}:{n}: label: '{label}' is not a grade of scheme {found[pair_id]} "
                              f"({', '.join(grades)})")
    with store.transaction() as con:
        for pair_id, label, note in rows:
            con.execute(GOLD_UPSERT_SQL, [pair_id, label, added_by, note])
    return len(rows)
