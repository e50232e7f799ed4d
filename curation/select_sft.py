"""Stage-1 SFT rows: teacher answers that parse, agree with the gold label and are consistent; k per pair."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.queries import sql
from curation.select_diversity import diverse
from curation.selection import SelectionContext, render_teacher_answers
from curation.store import registered
from schemas.answer import NOTE_LABEL_MISPLACED
from schemas.errors import CotgenError


def _near_duplicates(ctx: SelectionContext) -> list[str]:
    """Sample ids the diversity filter drops (none when it is off)."""
    threshold = ctx.curation.diversity_threshold
    if threshold is None:
        return []
    if ctx.embed is None:
        raise CotgenError("curation.diversity_threshold is set but no embedder was given to the selection")
    rows = ctx.store.rows(sql("sft.pool_texts"))
    groups = [r[1] for r in rows] if ctx.curation.diversity_scope == "pair" else None
    keep = diverse([r[2] for r in rows], groups, ctx.embed, threshold)
    return [r[0] for r, k in zip(rows, keep, strict=True) if not k]


def select_sft(ctx: SelectionContext) -> dict[str, Any]:
    """Fill rows_sft; returns the selection's counts."""
    cur = ctx.curation
    render_teacher_answers(ctx, all_pairs=True)
    ctx.store.con.execute(sql("sft.pool"), {"min_chars": cur.sft_min_chars, "max_chars": cur.sft_max_chars,
                                            "drop_wrong_steps": cur.sft_drop_wrong_steps})
    dropped = pa.table({"sample_id": pa.array(_near_duplicates(ctx), type=pa.string())})
    with registered(ctx.store, "dropped_arrow", dropped):
        ctx.store.con.execute(sql("sft.create_dropped"))
    ctx.store.con.execute(sql("sft.picked"), {"k": cur.sft_per_pair})
    ctx.store.con.execute(sql("sft.rows"))
    ctx.store.con.execute(sql("sft.dropped"), {"min_chars": cur.sft_min_chars, "max_chars": cur.sft_max_chars,
                                               "misplaced": NOTE_LABEL_MISPLACED,
                                               "drop_wrong_steps": cur.sft_drop_wrong_steps})
    return ctx.store.query(sql("sft.counts"))[0]


def balance_sft_train(ctx: SelectionContext, train_split: str) -> dict[str, Any]:
    """Once splits are known (temp table split_of), apply curation.sft_balance to the training split only."""
    ctx.store.con.execute(sql("sft.balance_train"), {"balance": ctx.curation.sft_balance, "train": train_split})
    ctx.store.con.execute(sql("sft.dropped_balanced"))
    return ctx.store.query(sql("sft.counts"))[0]
