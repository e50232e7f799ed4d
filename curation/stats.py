"""pass@k, majority vote, parse rate, per-label accuracy and confusion of generation runs, in SQL on the store."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
from duckdb.sqltypes import INTEGER, VARCHAR

from curation.queries import sql
from curation.store import Store
from schemas.answer import max_ngram_repeats
from schemas.config import CurationConfig
from schemas.errors import CotgenError

NO_LIMIT = 2**31 - 1  # a repetition gate that is off: no answer repeats a phrase this often
QUALITY_SAMPLE = 20_000  # answers per teacher run its intrinsic quality is measured on (seeded)


def install_macros(store: Store) -> None:
    """Temp macros (pass_at_k, difficulty_bin) and the max_ngram_repeats function: temporary, so a read-only
    connection can use them too."""
    store.con.execute(sql("stats.macros"))
    with contextlib.suppress(duckdb.NotImplementedException):  # already there on this connection
        store.con.create_function("max_ngram_repeats", max_ngram_repeats, [VARCHAR, INTEGER], INTEGER,
                                  null_handling="special", side_effects=False)


@dataclass
class RunInfo:
    run_id: str
    name: str
    role: str
    model: str
    backend: str
    prompt_name: str
    prompt_hash: str
    status: str
    samples: int
    gold_shown: bool = False


def list_runs(store: Store) -> list[RunInfo]:
    return [RunInfo(**{k: v for k, v in row.items() if k != "started_at"}) for row in store.query(sql("stats.runs"))]


def resolve_runs(store: Store, names: list[str] | None = None, role: str | None = None) -> list[RunInfo]:
    """Runs named (by name or id) in `names`, else every run with samples (of `role` when given)."""
    runs = list_runs(store)
    if not names:
        return [r for r in runs if r.samples and (role is None or r.role == role)]
    picked = []
    for name in names:
        hits = [r for r in runs if name in (r.name, r.run_id)]
        if not hits:
            known = ", ".join(sorted({r.name for r in runs})) or "none yet"
            raise CotgenError(f"run '{name}': no such run (runs: {known})")
        picked.append(hits[-1])  # a re-used name means the latest run of that name
    return picked


def latest_run(store: Store, role: str) -> RunInfo | None:
    runs = resolve_runs(store, role=role)
    return runs[-1] if runs else None


def compute_pair_counts(store: Store, run_ids: list[str]) -> None:
    """Fill temp tables sample_votes and pair_counts for these runs."""
    install_macros(store)
    store.con.execute(sql("stats.votes"), {"runs": run_ids})
    store.con.execute(sql("stats.pair_counts"))


@dataclass
class LabelStats:
    label: str
    pairs: int
    samples: int
    accuracy: float
    pass_at_n: float
    majority_accuracy: float


@dataclass
class TeacherQuality:
    """What a teacher run's texts look like, gold aside (rates over its samples)."""

    samples: int  # measured: a seeded sample of at most QUALITY_SAMPLE per run
    of: int  # the run's samples
    truncation_rate: float
    repetition_rate: float | None  # None while the repetition gate is off
    steps_present_rate: float
    contradiction_rate: float | None
    mean_step_chars: float | None
    clean_rate: float
    judged_steps: int = 0  # steps the step judge graded (`cotgen judge`), over all the run's answers
    judged_wrong_rate: float | None = None


@dataclass
class RunStats:
    """A run's figures as TaoSR1 reports them: pass@1..N over pairs, plus parse rate and majority vote.

    `gold_shown`: the prompt showed the gold label, so agreement is label compliance, not accuracy."""

    run_id: str
    name: str
    role: str
    model: str
    gold_shown: bool
    pairs: int
    samples: int
    n_max: int
    n_min: int
    parse_rate: float
    accuracy: float
    majority_accuracy: float
    pass_at_k: dict[int, float] = field(default_factory=dict)
    labels: list[LabelStats] = field(default_factory=list)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    quality: TeacherQuality | None = None

    @property
    def agreement_name(self) -> str:
        return "label compliance" if self.gold_shown else "accuracy"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pass_at_k"] = {str(k): v for k, v in self.pass_at_k.items()}
        return out


def teacher_quality(store: Store, runs: list[RunInfo], ngram: int, max_repeats: int | None) -> dict[str, TeacherQuality]:
    """Intrinsic quality of the teacher runs among `runs`, by run id."""
    install_macros(store)
    params = {"runs": [r.run_id for r in runs if r.role == "teacher"], "ngram": ngram,
              "max_repeats": max_repeats if max_repeats is not None else NO_LIMIT, "max_samples": QUALITY_SAMPLE}
    out = {}
    for row in store.query(sql("stats.teacher_quality"), params):
        run_id = row.pop("run_id")
        if max_repeats is None:
            row["repetition_rate"] = None
        out[run_id] = TeacherQuality(**row)
    if out and store.scalar(sql("stats.has_judge")):
        for run_id, judged, wrong in store.rows(sql("stats.judged_wrong"), {"runs": list(out)}):
            out[run_id].judged_steps, out[run_id].judged_wrong_rate = int(judged), wrong / judged
    return out


def run_stats(store: Store, runs: list[RunInfo], recount: bool = True,
              gates: CurationConfig | None = None) -> list[RunStats]:
    """Figures for each run; pass@k averages over the pairs with at least k samples. With `gates` (the
    [curation] knobs), teacher runs also get their intrinsic quality.

    recount=False reuses pair_counts already computed on this connection for (at least) these runs.
    """
    if not runs:
        return []
    if recount:
        compute_pair_counts(store, [r.run_id for r in runs])
    stats = {row["run_id"]: RunStats(**row) for row in store.query(sql("stats.run_summary"))}
    for run_id, k, value, _pairs in store.rows(sql("stats.run_pass_at_k").format(c="c_any")):
        stats[run_id].pass_at_k[int(k)] = float(value)
    for row in store.query(sql("stats.label_stats")):
        stats[row.pop("run_id")].labels.append(LabelStats(**row))
    for run_id, gold, predicted, n in store.rows(sql("stats.confusion")):
        stats[run_id].confusion.setdefault(gold, {})[predicted] = int(n)
    if gates is not None:
        for run_id, quality in teacher_quality(store, runs, gates.repetition_ngram, gates.max_ngram_repeats).items():
            if run_id in stats:
                stats[run_id].quality = quality
    return [stats[r.run_id] for r in runs if r.run_id in stats]


def pair_stats(store: Store, run: RunInfo) -> list[dict[str, Any]]:
    """Per pair of one run: n, c, parsed, majority vote and pass@k for k = 1..n."""
    compute_pair_counts(store, [run.run_id])
    return store.query(sql("stats.pair_stats"), {"run": run.run_id})


def export_pair_stats(store: Store, run: RunInfo, path: str) -> int:
    """Write per-pair statistics of one run to a Parquet file; returns the number of pairs."""
    compute_pair_counts(store, [run.run_id])
    store.con.sql(sql("stats.pair_stats"), params={"run": run.run_id}).write_parquet(path)
    return store.scalar(sql("stats.run_pairs"), {"run": run.run_id})
