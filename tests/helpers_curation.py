"""Curation test stores: real CrowdFlower pairs ingested by the real CLI, plus generation runs written with SQL.

Generation itself is slow (an LLM per sample), so the runs here are synthetic: for each pair a seeded
hash decides how many of its n samples are right; answers are rendered with schemas.answer.render_answer
and parsed back with parse_answer, exactly as generation stores them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from curation.store import Store, open_store
from schemas.answer import AnswerOrder, parse_answer, render_answer
from schemas.labels import BUILTIN_SCHEMES
from schemas.pair import Pair
from schemas.sample import Step
from schemas.workspace import Workspace

from conftest import run_cli

SCHEME = BUILTIN_SCHEMES["crowdflower"]
CROWDFLOWER_MAP = "id=id,query=query,title=product_title,description=product_description,label=median_relevance"
T0 = datetime(2025, 1, 1, 12, 0, 0)


def draw(*parts: object) -> int:
    """A stable pseudo-random integer from the parts."""
    return int(hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


def ingest_crowdflower(root: Path, shared_data: Path) -> Workspace:
    """`cotgen init` + `cotgen ingest` of the real CrowdFlower file."""
    run_cli("init", str(root))
    run_cli("ingest", str(shared_data / "crowdflower" / "train_dev.csv"), "-w", str(root), "--source", "crowdflower",
            "--scheme", "crowdflower", "--map", CROWDFLOWER_MAP, "--strip-html")
    return Workspace.open(root)


def ingest_later_queries(ws: Workspace, shared_data: Path, n_queries: int) -> int:
    """New queries arrive: real CrowdFlower rows of n queries, the query text changed so they are new queries,
    ingested as another source. Returns how many pairs came in."""
    import polars as pl

    rows = pl.read_csv(shared_data / "crowdflower" / "train_dev.csv", infer_schema_length=0)
    picked = rows.filter(pl.col("query").is_in(rows["query"].unique(maintain_order=True).head(n_queries).implode()))
    later = picked.with_columns(pl.lit("later-") + pl.col("id"), pl.col("query") + pl.lit(" (later)"))
    path = ws.root / "later.csv"
    later.write_csv(path)
    run_cli("ingest", str(path), "-w", str(ws.root), "--source", "later", "--scheme", "crowdflower",
            "--map", CROWDFLOWER_MAP, "--strip-html")
    return later.height


def copy_workspace(base: Path, dest: Path) -> Workspace:
    shutil.copytree(base, dest)
    return Workspace.open(dest)


@dataclass
class PairRow:
    pair_id: str
    query_id: str
    query: str
    title: str
    label: str


def pairs_of_queries(store: Store, n_queries: int) -> list[PairRow]:
    """All pairs of the first n queries (by query id), so a test store stays small but has whole queries."""
    rows = store.rows(
        "SELECT pair_id, query_id, query, title, label FROM pairs WHERE query_id IN "
        "(SELECT DISTINCT query_id FROM pairs ORDER BY query_id LIMIT ?) ORDER BY pair_id", [n_queries])
    return [PairRow(*r) for r in rows]


def wrong_label(gold: str, salt: object) -> str:
    others = [g for g in SCHEME.ids if g != gold]
    return others[draw(gold, salt) % len(others)]


def steps_for(pair: PairRow, label: str, variant: int = 0) -> list[Step]:
    """Five template steps arguing for `label`; `variant` changes the wording (distinct texts per sample)."""
    grade = SCHEME.grade(label)
    return [
        Step(name="query_understanding", text=f"The shopper searches for \"{pair.query}\" (reading {variant})."),
        Step(name="item_understanding", text=f"The item is \"{pair.title[:80]}\"."),
        Step(name="category_matching", text="The category fits." if SCHEME.is_relevant(label) else "The category differs."),
        Step(name="attribute_matching", text=grade.meaning),
        Step(name="relevance_judgement", text=f"{grade.name}, so the grade is {label}."),
    ]


def answer_text(pair: PairRow, label: str, order: AnswerOrder, variant: int = 0) -> str:
    return render_answer(steps_for(pair, label, variant), label, order)


def add_run(store: Store, name: str, role: str, started: int = 0, model: str = "bundled:smollm2-135m-instruct",
            params: dict | None = None) -> str:
    run_id = f"run-{name}"
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs (run_id, name, role, backend, model, prompt_name, prompt_hash, params, status, started_at, "
            "finished_at) VALUES (?, ?, ?, 'transformers', ?, ?, ?, ?, 'done', ?, ?)",
            [run_id, name, role, model, f"{role}.v1", hashlib.sha256(role.encode()).hexdigest(),
             json.dumps(params or {}), T0 + timedelta(minutes=started), T0 + timedelta(minutes=started + 1)])
    return run_id


def sample_id(run_id: str, pair_id: str, index: int) -> str:
    return hashlib.sha1(f"{run_id}:{pair_id}:{index}".encode()).hexdigest()[:20]


def add_samples(store: Store, run_id: str, answers: list[tuple[str, int, str]], finish_reason: str = "stop") -> list[str]:
    """Store (pair_id, sample_index, text) answers as generation does: completion + parsed sample."""
    cols: dict[str, list] = {k: [] for k in ("sample_id", "pair_id", "sample_index", "text", "steps", "predicted_label",
                                              "parse_status", "parse_reason", "consistent")}
    for pair_id, index, text in answers:
        parsed = parse_answer(text, SCHEME)
        values = {"sample_id": sample_id(run_id, pair_id, index), "pair_id": pair_id, "sample_index": index,
                  "text": text, "steps": json.dumps([s.model_dump() for s in parsed.steps]),
                  "predicted_label": parsed.label, "parse_status": parsed.status, "parse_reason": parsed.reason,
                  "consistent": parsed.consistent}
        for k, v in values.items():
            cols[k].append(v)
    table = pa.table(cols)
    store.con.register("new_samples", table)
    try:
        with store.transaction() as con:
            con.execute("INSERT INTO completions (request_key, run_id, pair_id, sample_index, text, finish_reason) "
                        "SELECT sample_id, ?, pair_id, sample_index, text, ? FROM new_samples", [run_id, finish_reason])
            con.execute("INSERT INTO samples (sample_id, run_id, pair_id, sample_index, steps, predicted_label, "
                        "parse_status, parse_reason, consistent) SELECT sample_id, ?, pair_id, sample_index, "
                        "CAST(steps AS JSON), predicted_label, parse_status, parse_reason, consistent FROM new_samples",
                        [run_id])
    finally:
        store.con.unregister("new_samples")
    return cols["sample_id"]


def correct_count(pair_id: str, n: int, run: str) -> int:
    """Seeded c for a pair: spreads pairs over unsolved, hard, medium and easy."""
    return draw(run, pair_id) % (n + 1)


def synth_run(store: Store, pairs: list[PairRow], name: str, role: str, n: int, order: AnswerOrder,
              started: int = 0) -> str:
    """A run with n answers per pair; the first c (seeded) carry the gold label, the rest a wrong one."""
    run_id = add_run(store, name, role, started)
    answers = []
    for p in pairs:
        c = correct_count(p.pair_id, n, name) if role == "policy" else (n if draw(name, p.pair_id) % 5 else 0)
        for i in range(n):
            label = p.label if i < c else wrong_label(p.label, (name, i))
            answers.append((p.pair_id, i, answer_text(p, label, order, variant=i)))
    add_samples(store, run_id, answers)
    return run_id


def add_review(store: Store, action: str, pair_id: str, *, sample_id: str | None = None, new_label: str | None = None,
               edited_text: str | None = None, step_index: int | None = None, step_correct: bool | None = None,
               annotator: str = "ann", minutes: int = 0, reason: str = "") -> str:
    review_id = f"rev-{draw(action, pair_id, sample_id, step_index, minutes, annotator):x}"
    with store.transaction() as con:
        con.execute(
            "INSERT INTO reviews (review_id, annotator, action, pair_id, sample_id, step_index, step_correct, reason, "
            "new_label, edited_text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [review_id, annotator, action, pair_id, sample_id, step_index, step_correct, reason, new_label,
             edited_text, T0 + timedelta(hours=1, minutes=minutes)])
    return review_id


def build_store(ws: Workspace, n_queries: int = 30, teacher_n: int = 2, policy_n: int = 4) -> list[PairRow]:
    """Teacher (cot_first) and policy (label_first) runs over the pairs of the first n queries."""
    with open_store(ws) as store:
        pairs = pairs_of_queries(store, n_queries)
        synth_run(store, pairs, "teacher-1", "teacher", teacher_n, "cot_first", started=0)
        synth_run(store, pairs, "policy-1", "policy", policy_n, "label_first", started=10)
    return pairs


def with_curation(ws: Workspace, **knobs: object) -> Workspace:
    """The workspace with some [curation] knobs changed (as if cotgen.toml said so)."""
    curation = ws.config.curation.model_validate({**ws.config.curation.model_dump(), **knobs})
    return Workspace(ws.root, ws.config.model_copy(update={"curation": curation}))


def plain_prompt(pair: Pair) -> list[dict]:
    """A minimal policy prompt for tests that exercise curation, not prompting (cotgen.prompting is slower)."""
    return [{"role": "system", "content": "Grade the item for the query: L4, L3, L2 or L1."},
            {"role": "user", "content": f"Query: {pair.query}\nItem: {pair.title}"}]
