"""TaoSR1 difficulty per (pair, policy run) from c, its clean right answers of n; see `describe_bins`."""

from __future__ import annotations

from curation.queries import sql
from curation.stats import RunInfo, RunStats, compute_pair_counts, run_stats
from curation.store import Store
from schemas.config import CurationConfig, DifficultyBins

BINS = ("easy", "medium", "hard", "unsolved")


def describe_bins(bins: DifficultyBins) -> str:
    """The one wording of the bins and the GRPO window (README, cotgen.toml, `curate difficulty` and the card)."""
    return (f"c = clean right answers (parsed ok, label = gold) of n samples; unsolved c = 0; easy c >= {bins.easy:g}n; "
            f"hard 0 < c <= {bins.gamma:g}n; medium: the rest; GRPO keeps 0 < c < {bins.gamma:g}n (TaoSR1)")


def curate(store: Store, runs: list[RunInfo], cur: CurationConfig) -> tuple[list[RunStats], dict[str, dict[str, int]]]:
    """The curate stage in one pass over the samples: statistics of `runs`, difficulty of their policy runs."""
    compute_pair_counts(store, [r.run_id for r in runs])
    summary = store_difficulty(store, [r for r in runs if r.role == "policy"], cur.difficulty, recount=False)
    return run_stats(store, runs, recount=False, gates=cur), summary


def store_difficulty(store: Store, runs: list[RunInfo], bins: DifficultyBins,
                     recount: bool = True) -> dict[str, dict[str, int]]:
    """Recompute and store pair_difficulty for `runs` in one transaction; returns {run name: {bin: pairs}}.

    recount=False reuses pair_counts already computed on this connection for (at least) these runs.
    """
    if not runs:
        return {}
    run_ids = [r.run_id for r in runs]
    if recount:
        compute_pair_counts(store, run_ids)
    inputs = {r.run_id: fingerprint(store, r.run_id) for r in runs}
    with store.transaction() as con:
        con.execute(sql("difficulty.delete"), {"runs": run_ids})
        for run_id in run_ids:
            con.execute(sql("difficulty.insert"), {"run": run_id, "inputs": inputs[run_id], "gamma": bins.gamma, "easy": bins.easy})
    summary: dict[str, dict[str, int]] = {r.name: dict.fromkeys(BINS, 0) for r in runs}
    for _run_id, name, difficulty, pairs in store.rows(sql("difficulty.summary"), {"runs": run_ids}):
        summary[name][difficulty] = int(pairs)
    return summary


def fingerprint(store: Store, run_id: str) -> str:
    return store.scalar(sql("difficulty.fingerprint"), {"run": run_id})


def load_current_counts(store: Store, run_id: str, bins: DifficultyBins) -> bool:
    """Fill temp pair_counts (run_id, pair_id, n, c) from pair_difficulty when its rows for the run are
    current (same samples, reviews and bins); False when they are missing or stale."""
    if not store.scalar(sql("difficulty.has_table")):  # a store opened read-only before migration 004
        return False
    params = {"run": run_id, "inputs": fingerprint(store, run_id), "gamma": bins.gamma, "easy": bins.easy}
    if not store.scalar(sql("difficulty.current"), params):
        return False
    store.con.execute(sql("difficulty.reuse"), {"run": run_id})
    return True
