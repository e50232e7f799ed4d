"""Stage-2 DPO rows (TaoSR1): chosen = a right answer of the policy, rejected = a wrong one of the same pair.

Pairs whose answers are all wrong take the teacher's accepted answer as chosen; all-right pairs give none.
"""

from __future__ import annotations

from typing import Any

from curation.queries import sql
from curation.selection import SelectionContext, render_teacher_answers

# Each pair's case (dpo.groups); the card defines every case it counts with these words.
CASES = {
    "mixed": "the policy has a clean right answer (parsed ok, consistent, through the quality gates) and a wrong "
             "one: chosen = the right one, rejected = the wrong one",
    "all_wrong": "no clean right answer (c = 0) and some wrong ones: the teacher's accepted answer is chosen",
    "unclean": "right answers parsed ok (c > 0) but none consistent, through the gates or in the export's answer "
               "order, and some wrong ones: "
               "the teacher's accepted answer is chosen, as for all_wrong",
    "all_right": "nothing wrong to reject: no preference pair",
}
# A policy run prompted for the other answer order gives no chosen answers: its raw texts would put the
# label where the export's format does not (every pair then takes the teacher's answer, or none).


def select_dpo(ctx: SelectionContext) -> dict[str, Any]:
    """Fill rows_dpo from the policy run; returns the cases per pair and rows by where `chosen` came from."""
    cur = ctx.curation
    con = ctx.store.con
    if cur.dpo_per_pair == 1:
        con.execute(sql("dpo.sides_one"))
    else:
        con.execute(sql("dpo.sides"), {"cap": cur.dpo_per_pair})
    con.execute(sql("dpo.groups"))
    con.execute(sql("dpo.mixed"), {"cap": cur.dpo_per_pair})
    if cur.dpo_teacher_fallback:
        con.execute(sql("dpo.wanted"))
        render_teacher_answers(ctx, all_pairs=False)
    con.execute(sql("selection.best_teacher"), {"min_chars": cur.sft_min_chars, "max_chars": cur.sft_max_chars})
    if cur.dpo_teacher_fallback:
        con.execute(sql("dpo.teacher"), {"cap": cur.dpo_per_pair})
    con.execute(sql("dpo.rows"))
    con.execute(sql("dpo.dropped"))
    cases = {kind: int(n) for kind, n in ctx.store.rows(sql("dpo.counts"))}
    rows = {src: {"rows": int(r), "pairs": int(p)} for src, r, p in ctx.store.rows(sql("dpo.row_counts"))}
    return {"pairs_by_case": cases, "rows_by_chosen": rows,
            "rows": sum(v["rows"] for v in rows.values()),
            "policy_in_format": bool(ctx.store.scalar(sql("dpo.policy_in_format")))}
