"""Train/validation/test split grouped by query (no query in two splits), stratified by label, seeded.

Assignments are kept with each version (splits.parquet) and carried forward: a query placed once keeps
its split in every later version of the dataset, so a test split never leaks into a later train split.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from curation.queries import sql
from curation.store import Store, registered

SPLITS_SCHEMA = pa.schema([("query_id", pa.string()), ("split", pa.string()), ("since_version", pa.int64())])


@dataclass(frozen=True)
class Group:
    query_id: str
    stratum: str
    pairs: int


def greedy_assign(groups: list[Group], fractions: dict[str, float], pinned: dict[str, str]) -> dict[str, str]:
    """Place each new query (in the given order) in the split furthest below its share of pairs so far.

    Pinned queries keep their split and count towards the shares, so new queries fill what is missing.
    The first split listed wins ties, so small data still fills train first.
    """
    names = list(fractions)
    totals = dict.fromkeys(names, 0)
    for g in groups:
        if g.query_id in pinned and pinned[g.query_id] in totals:
            totals[pinned[g.query_id]] += g.pairs
    placed: dict[str, str] = {}
    for g in groups:
        if g.query_id in pinned:
            continue
        after = sum(totals.values()) + g.pairs
        best = max(names, key=lambda s: (fractions[s] * after - totals[s], -names.index(s)))
        placed[g.query_id] = best
        totals[best] += g.pairs
    return placed


def assign_splits(store: Store, seed: int, fractions: dict[str, float], previous: pa.Table | None,
                  version: int) -> pa.Table:
    """Split assignments for every query of the labelled pairs in export_pairs (plus all earlier ones); also fills
    temp table split_of. Earlier assignments are kept: a test query stays a test query."""
    pinned_rows = previous.to_pylist() if previous is not None else []
    pinned = {r["query_id"]: r["split"] for r in pinned_rows}
    groups = [Group(*row) for row in store.rows(sql("splits.query_groups"), {"seed": str(seed)})]
    placed = greedy_assign(groups, fractions, pinned)
    rows = pinned_rows + [{"query_id": q, "split": s, "since_version": version} for q, s in placed.items()]
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["query_id"]), schema=SPLITS_SCHEMA)
    with registered(store, "splits_arrow", table):
        store.con.execute(sql("splits.create_split_of"))
    return table
