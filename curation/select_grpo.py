"""Stage-3 GRPO prompts (TaoSR1): difficulty-based dynamic sampling, then class-balanced down-sampling."""

from __future__ import annotations

from typing import Any

from curation.queries import sql
from curation.selection import SelectionContext, label_counts, label_cv


def select_grpo(ctx: SelectionContext) -> dict[str, Any]:
    """Fill rows_grpo; returns counts and the label distribution's coefficient of variation before and after."""
    cur = ctx.curation
    ctx.store.con.execute(sql("grpo.kept"), {"gamma": cur.difficulty.gamma})
    ctx.store.con.execute(sql("grpo.rows"), {"balance": cur.grpo_balance})
    ctx.store.con.execute(sql("grpo.dropped"))
    cv_before, _ = label_cv(ctx.store, "grpo_kept")
    cv_after, _ = label_cv(ctx.store, "rows_grpo")
    return {
        **ctx.store.query(sql("grpo.counts"))[0],
        "labels_before": label_counts(ctx.store, "grpo_kept"),
        "labels_after": label_counts(ctx.store, "rows_grpo"),
        "cv_before": round(cv_before, 6),
        "cv_after": round(cv_after, 6),
    }
