"""The store side of generation: run rows, which request keys are done, batch writes, run summaries.

A sample's id is its request key, so `samples.sample_id = completions.request_key`. A batch of
completions and their samples lands in one transaction: a key is either fully stored or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from curation.pairs import pair_from_row
from curation.store import Store
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.run import Run, RunStatus
from schemas.sample import Sample

# What makes two runs the same run: continuing a run with other settings would mix samples. The columns,
# and the params entries the generator puts there (sampling settings, the rule index it retrieved from).
RUN_IDENTITY = ("role", "backend", "model", "prompt_name", "prompt_hash")
RUN_IDENTITY_PARAMS = ("identity", "retrieval")

RUN_BY_NAME_SQL = "SELECT run_id, role, backend, model, prompt_name, prompt_hash, params, status FROM runs WHERE name = ?"
INSERT_RUN_SQL = """
INSERT INTO runs (run_id, name, role, backend, model, prompt_name, prompt_hash, params, status, started_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, 'running', ?)
"""
RESUME_RUN_SQL = "UPDATE runs SET status = 'running', params = ?::JSON, finished_at = NULL WHERE run_id = ?"
FINISH_RUN_SQL = "UPDATE runs SET status = ?, summary = ?::JSON, finished_at = ? WHERE run_id = ?"
COMPLETE_PAIRS_SQL = """
SELECT pair_id FROM samples WHERE run_id = ? AND sample_index < ?
GROUP BY pair_id HAVING count(DISTINCT sample_index) = ?
"""
DONE_KEYS_SQL = "SELECT k.key FROM done_probe k SEMI JOIN samples s ON s.sample_id = k.key"
INSERT_COMPLETIONS_SQL = """
INSERT OR IGNORE INTO completions
    (request_key, run_id, pair_id, sample_index, request, text, finish_reason, tokens_in, tokens_out, logprobs,
     latency_s, attempts)
SELECT request_key, run_id, pair_id, sample_index, request::JSON, text, finish_reason, tokens_in, tokens_out,
       logprobs::JSON, latency_s, attempts
FROM completions_batch
"""
INSERT_SAMPLES_SQL = """
INSERT OR IGNORE INTO samples
    (sample_id, run_id, pair_id, sample_index, steps, predicted_label, label_probs, parse_status, parse_reason,
     consistent, correct, rule_ids, gold_label)
SELECT sample_id, run_id, pair_id, sample_index, steps::JSON, predicted_label, label_probs::JSON, parse_status,
       parse_reason, consistent, correct, rule_ids, gold_label
FROM samples_batch
"""
PAIRS_SQL = """
SELECT pair_id, source, query_id, query, title, description, attributes, raw_label, label, scheme
FROM gold_pairs
WHERE ($source::VARCHAR IS NULL OR source = $source)
ORDER BY source, source_row, pair_id
LIMIT $limit
"""
SUMMARY_SQL = """
SELECT count(*) AS samples,
       count(DISTINCT s.pair_id) AS pairs,
       count(*) FILTER (WHERE s.predicted_label IS NOT NULL) AS labelled,
       count(*) FILTER (WHERE s.parse_status = 'ok') AS parsed_ok,
       count(*) FILTER (WHERE NOT s.consistent) AS inconsistent,
       count(*) FILTER (WHERE s.correct) AS correct,
       coalesce(sum(c.tokens_in), 0) AS tokens_in,
       coalesce(sum(c.tokens_out), 0) AS tokens_out,
       count(*) FILTER (WHERE c.finish_reason = 'length') AS truncated
FROM samples s LEFT JOIN completions c ON c.request_key = s.sample_id
WHERE s.run_id = ?
"""
STATUS_COUNTS_SQL = "SELECT parse_status, count(*) AS n FROM samples WHERE run_id = ? GROUP BY ALL ORDER BY n DESC"


@dataclass
class CompletionRow:
    """One raw completion, keyed by its request."""

    request_key: str
    run_id: str
    pair_id: str
    sample_index: int
    request: dict[str, Any]
    text: str
    finish_reason: str | None
    tokens_in: int
    tokens_out: int
    logprobs: list | None
    latency_s: float
    attempts: int


@dataclass
class SampleRow:
    """A parsed sample plus what it was generated from: the rules in its prompt and the gold label then."""

    sample: Sample
    gold_label: str
    rule_ids: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def open_run(store: Store, run: Run) -> Run:
    """Create the run, or continue the run of that name when it was made with the same role, model and prompt."""
    row = store.query(RUN_BY_NAME_SQL, [run.name])
    params = json.dumps(run.params, sort_keys=True)
    with store.transaction() as con:
        if not row:
            con.execute(INSERT_RUN_SQL, [run.run_id, run.name, run.role, run.backend, run.model, run.prompt_name,
                                         run.prompt_hash, params, run.started_at])
            return run
        existing = row[0]
        differs = [f"{c} {existing[c]!r} (now {getattr(run, c)!r})" for c in RUN_IDENTITY if existing[c] != getattr(run, c)]
        stored = json.loads(existing["params"] or "{}")
        differs += [f"{p} {stored.get(p)!r} (now {run.params.get(p)!r})" for p in RUN_IDENTITY_PARAMS
                    if stored.get(p) != run.params.get(p)]
        if differs:
            raise CotgenError(f"run '{run.name}' exists with {'; '.join(differs)}; pass another --run name")
        con.execute(RESUME_RUN_SQL, [params, existing["run_id"]])
    return run.model_copy(update={"run_id": existing["run_id"]})


def finish_run(store: Store, run_id: str, status: RunStatus, summary: dict[str, Any]) -> None:
    with store.transaction() as con:
        con.execute(FINISH_RUN_SQL, [status, json.dumps(summary, default=str), _now(), run_id])


def complete_pairs(store: Store, run_id: str, n: int) -> set[str]:
    """Pairs that already have samples 0..n-1 in the run: a re-run skips them without rendering their prompts."""
    return {r[0] for r in store.rows(COMPLETE_PAIRS_SQL, [run_id, n, n])}


def done_keys(store: Store, keys: Iterable[str]) -> set[str]:
    """Which of `keys` already have a stored sample (and so a completion: both land in one transaction)."""
    probe = pa.table({"key": pa.array(list(keys), pa.string())})
    if probe.num_rows == 0:
        return set()
    store.con.register("done_probe", probe)
    try:
        return {r[0] for r in store.rows(DONE_KEYS_SQL)}
    finally:
        store.con.unregister("done_probe")


def save_batch(store: Store, completions: list[CompletionRow], samples: list[SampleRow]) -> None:
    """Completions and their samples in one transaction; keys already stored are left as they are."""
    if not completions and not samples:
        return
    comp = pa.table({
        "request_key": [c.request_key for c in completions], "run_id": [c.run_id for c in completions],
        "pair_id": [c.pair_id for c in completions], "sample_index": pa.array([c.sample_index for c in completions], pa.int32()),
        "request": [json.dumps(c.request, sort_keys=True) for c in completions], "text": [c.text for c in completions],
        "finish_reason": pa.array([c.finish_reason for c in completions], pa.string()),
        "tokens_in": pa.array([c.tokens_in for c in completions], pa.int32()),
        "tokens_out": pa.array([c.tokens_out for c in completions], pa.int32()),
        "logprobs": pa.array([json.dumps(c.logprobs) if c.logprobs is not None else None for c in completions], pa.string()),
        "latency_s": pa.array([c.latency_s for c in completions], pa.float64()),
        "attempts": pa.array([c.attempts for c in completions], pa.int32()),
    })
    rows = [r.sample for r in samples]
    samp = pa.table({
        "sample_id": [s.sample_id for s in rows], "run_id": [s.run_id for s in rows], "pair_id": [s.pair_id for s in rows],
        "sample_index": pa.array([s.sample_index for s in rows], pa.int32()),
        "steps": [json.dumps([st.model_dump() for st in s.steps]) for s in rows],
        "predicted_label": pa.array([s.predicted_label for s in rows], pa.string()),
        "label_probs": pa.array([json.dumps(s.label_probs) if s.label_probs is not None else None for s in rows], pa.string()),
        "parse_status": [s.parse_status for s in rows], "parse_reason": [s.parse_reason for s in rows],
        "consistent": pa.array([s.consistent for s in rows], pa.bool_()),
        "correct": pa.array([s.correct for s in rows], pa.bool_()),
        "rule_ids": pa.array([r.rule_ids for r in samples], pa.list_(pa.string())),
        "gold_label": [r.gold_label for r in samples],
    })
    # Registered outside the transaction: after a failed statement the transaction refuses all work,
    # unregistering included, until it is rolled back.
    store.con.register("completions_batch", comp)
    store.con.register("samples_batch", samp)
    try:
        with store.transaction() as con:
            con.execute(INSERT_COMPLETIONS_SQL)
            con.execute(INSERT_SAMPLES_SQL)
    finally:
        store.con.unregister("completions_batch")
        store.con.unregister("samples_batch")


def generation_pairs(store: Store, source: str | None = None, limit: int | None = None) -> list[Pair]:
    """Pairs to generate for, in ingest order, with their gold label after reviews."""
    rows = store.query(PAIRS_SQL, {"source": source, "limit": limit})
    return [pair_from_row(r) for r in rows]


def run_summary(store: Store, run_id: str) -> dict[str, Any]:
    """Samples, parse rate, agreement with the gold label and tokens of a run, from the store."""
    s = store.query(SUMMARY_SQL, [run_id])[0]
    n = s["samples"] or 0
    return {
        **s,
        "parse_rate": s["labelled"] / n if n else None,
        "agreement": s["correct"] / n if n else None,
        "parse_status": {r["parse_status"]: r["n"] for r in store.query(STATUS_COUNTS_SQL, [run_id])},
    }
