"""The store side of the step judge: judge runs, the CoTs to judge, done keys, batch writes, summaries, stats.

A judgement's id is its request key (as a sample's is): a key already in `judgements` is never sent again,
whichever judge run asked. A batch of judgements and their step verdicts lands in one transaction.
`judge_stats` measures the judge against human step marks (the offline verifier): per step name the
confusion, accuracy and Cohen's kappa, kappa = (p_o - p_e) / (1 - p_e) over the two classes correct/wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from curation.pairs import pair_from_row
from curation.queries import sql
from curation.selection import steps_from_json
from curation.store import Store, registered
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.sample import Step

# What makes two judge runs the same run (continuing one with other settings would mix verdicts).
RUN_IDENTITY = ("samples_role", "backend", "model", "prompt_name", "prompt_hash")


@dataclass
class JudgeRun:
    """One judge run: which judge, with which template, graded whose CoTs."""

    judge_run_id: str
    name: str
    samples_role: str
    backend: str
    model: str
    prompt_name: str
    prompt_hash: str
    started_at: datetime
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """A stored CoT to judge: its pair (label after relabels), steps, own label and the rules of its prompt."""

    sample_id: str
    run: str
    pair: Pair
    steps: list[Step]
    predicted: str | None
    rule_ids: list[str]


@dataclass(frozen=True)
class VerdictRow:
    """The judge's verdict on one step (`correct` None: no verdict)."""

    step_index: int
    step_name: str
    correct: bool | None
    reason: str


@dataclass
class JudgementRow:
    """One judge answer, keyed by its request, with its parse status and per-step verdicts."""

    judge_key: str
    judge_run_id: str
    sample_id: str
    pair_id: str
    model: str
    prompt_hash: str
    text: str
    status: str
    note: str
    first_wrong: int | None
    verdicts: list[VerdictRow]
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    attempts: int = 1


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def open_judge_run(store: Store, run: JudgeRun) -> JudgeRun:
    """Create the judge run, or continue the one of that name when its identity (and params.identity) match."""
    rows = store.query(sql("judge.run_by_name"), [run.name])
    params = json.dumps(run.params, sort_keys=True, default=str)
    with store.transaction() as con:
        if not rows:
            con.execute(sql("judge.insert_run"), [run.judge_run_id, run.name, run.samples_role, run.backend, run.model,
                                                  run.prompt_name, run.prompt_hash, params, run.started_at])
            return run
        existing = rows[0]
        differs = [f"{c} {existing[c]!r} (now {getattr(run, c)!r})" for c in RUN_IDENTITY if existing[c] != getattr(run, c)]
        stored = json.loads(existing["params"] or "{}").get("identity")
        if stored != run.params.get("identity"):
            differs.append(f"settings {stored!r} (now {run.params.get('identity')!r})")
        if differs:
            raise CotgenError(f"judge run '{run.name}' exists with {'; '.join(differs)}; pass another --name")
        con.execute(sql("judge.resume_run"), [params, existing["judge_run_id"]])
    run.judge_run_id = existing["judge_run_id"]
    return run


def finish_judge_run(store: Store, judge_run_id: str, status: str, summary: dict[str, Any]) -> None:
    with store.transaction() as con:
        con.execute(sql("judge.finish_run"), [status, json.dumps(summary, default=str), _now(), judge_run_id])


def judge_candidates(store: Store, role: str, runs: list[str], limit: int | None = None) -> list[Candidate]:
    """CoTs with steps from the generation runs named `runs` (or every run of `role`), in generation order."""
    unknown = [r[0] for r in store.rows(sql("judge.unknown_runs"), {"runs": runs})] if runs else []
    if unknown:
        raise CotgenError(f"--run: no generation run named {', '.join(sorted(unknown))}; see `cotgen status`")
    rows = store.query(sql("judge.candidates"), {"runs": runs, "role": role, "limit": limit})
    return [Candidate(sample_id=r["sample_id"], run=r["run"], pair=pair_from_row(r), steps=steps_from_json(r["steps"]),
                      predicted=r["predicted_label"], rule_ids=list(r["rule_ids"] or [])) for r in rows]


def pair_rule_ids(store: Store, pair_ids: list[str]) -> dict[str, list[str]]:
    """The rule ids a prompt of each pair was given (see `judge.pair_rules`); pairs without any are left out."""
    return {r[0]: list(r[1]) for r in store.rows(sql("judge.pair_rules"), [pair_ids])} if pair_ids else {}


def done_keys(store: Store, keys: list[str]) -> set[str]:
    """Which of `keys` already have a stored judgement (and so their verdicts: both land in one transaction)."""
    if not keys:
        return set()
    with registered(store, "judge_probe", pa.table({"key": pa.array(keys, pa.string())})):
        return {r[0] for r in store.rows(sql("judge.done_keys"))}


def save_judgements(store: Store, rows: list[JudgementRow]) -> None:
    """Judgements and their step verdicts in one transaction; keys already stored are left as they are."""
    if not rows:
        return
    judged = pa.table({
        "judge_key": [r.judge_key for r in rows], "judge_run_id": [r.judge_run_id for r in rows],
        "sample_id": [r.sample_id for r in rows], "pair_id": [r.pair_id for r in rows],
        "model": [r.model for r in rows], "prompt_hash": [r.prompt_hash for r in rows], "text": [r.text for r in rows],
        "status": [r.status for r in rows], "note": [r.note for r in rows],
        "first_wrong": pa.array([r.first_wrong for r in rows], pa.int32()),
        "finish_reason": pa.array([r.finish_reason for r in rows], pa.string()),
        "tokens_in": pa.array([r.tokens_in for r in rows], pa.int32()),
        "tokens_out": pa.array([r.tokens_out for r in rows], pa.int32()),
        "latency_s": pa.array([r.latency_s for r in rows], pa.float64()),
        "attempts": pa.array([r.attempts for r in rows], pa.int32()),
    })
    flat = [(r, v) for r in rows for v in r.verdicts]
    verdicts = pa.table({
        "judge_run_id": pa.array([r.judge_run_id for r, _ in flat], pa.string()),
        "sample_id": pa.array([r.sample_id for r, _ in flat], pa.string()),
        "step_index": pa.array([v.step_index for _, v in flat], pa.int32()),
        "step_name": pa.array([v.step_name for _, v in flat], pa.string()),
        "correct": pa.array([v.correct for _, v in flat], pa.bool_()),
        "reason": pa.array([v.reason for _, v in flat], pa.string()),
        "model": pa.array([r.model for r, _ in flat], pa.string()),
        "prompt_hash": pa.array([r.prompt_hash for r, _ in flat], pa.string()),
        "judge_key": pa.array([r.judge_key for r, _ in flat], pa.string()),
    })
    # Registered outside the transaction: a failed statement leaves the transaction refusing even unregister.
    with registered(store, "judgements_batch", judged), registered(store, "verdicts_batch", verdicts), \
            store.transaction() as con:
        con.execute(sql("judge.insert_verdicts"))
        con.execute(sql("judge.insert_judgements"))


def judge_run_summary(store: Store, judge_run_id: str) -> dict[str, Any]:
    """What a judge run holds: judgements, parse rate, verdicts per status, share of steps judged wrong per step."""
    counts = store.query(sql("judge.run_counts"), [judge_run_id])[0]
    n = counts["judgements"]
    return {
        **counts,
        "parse_rate": counts["parsed"] / n if n else None,
        "status": {r["status"]: r["n"] for r in store.query(sql("judge.run_status_counts"), [judge_run_id])},
        "steps": [{**r, "wrong_share": float(r["wrong_share"]) if r["wrong_share"] is not None else None}
                  for r in store.query(sql("judge.run_step_counts"), [judge_run_id])],
    }


def cohen_kappa(both_correct: int, human_correct_judge_wrong: int, human_wrong_judge_correct: int,
                both_wrong: int) -> float | None:
    """Cohen's kappa of two raters over correct/wrong; None when undefined (no items, or chance agreement 1)."""
    a, b, c, d = both_correct, human_correct_judge_wrong, human_wrong_judge_correct, both_wrong
    n = a + b + c + d
    if n == 0:
        return None
    observed = (a + d) / n
    chance = ((a + b) * (a + c) + (c + d) * (b + d)) / (n * n)
    return None if chance >= 1.0 else (observed - chance) / (1.0 - chance)


def _agreement_row(step: str, cells: dict[str, int]) -> dict[str, Any]:
    n = sum(cells.values())
    return {"step": step, "n": n, "accuracy": (cells["both_correct"] + cells["both_wrong"]) / n if n else None,
            "kappa": cohen_kappa(**cells), "confusion": cells}


CELLS = ("both_correct", "human_correct_judge_wrong", "human_wrong_judge_correct", "both_wrong")


def judge_stats(store: Store) -> dict[str, Any]:
    """The judge (latest verdict per step) against human step marks per step name and overall, and against labels."""
    per_step = [_agreement_row(r["step_name"], {c: int(r[c]) for c in CELLS}) for r in store.query(sql("judge.agreement"))]
    total = {c: sum(row["confusion"][c] for row in per_step) for c in CELLS}
    return {
        "steps": per_step,
        "overall": _agreement_row("all", total),
        "labels": store.query(sql("judge.label_agreement"))[0],
        "judge_runs": store.query(sql("judge.judge_runs")),
    }
