"""TaoSR1 difficulty per (pair, policy run): easy (c = n), medium, hard (0 < c <= gamma * n), unsolved (c = 0)."""

from __future__ import annotations

from curation.stats import RunInfo, compute_pair_counts, load_queries
from curation.store import Store
from schemas.config import DifficultyBins

BINS = ("easy", "medium", "hard", "unsolved")


def store_difficulty(store: Store, runs: list[RunInfo], bins: DifficultyBins) -> dict[str, dict[str, int]]:
    """Recompute and store pair_difficulty for `runs` in one transaction; returns {run name: {bin: pairs}}."""
    if not runs:
        return {}
    run_ids = [r.run_id for r in runs]
    sql = load_queries("difficulty.sql")
    compute_pair_counts(store, run_ids)
    with store.transaction() as con:
        con.execute(sql["delete"], {"runs": run_ids})
        con.execute(sql["insert"], {"runs": run_ids, "gamma": bins.gamma, "easy": bins.easy})
    summary: dict[str, dict[str, int]] = {r.name: dict.fromkeys(BINS, 0) for r in runs}
    for _run_id, name, difficulty, pairs in store.rows(sql["summary"], {"runs": run_ids}):
        summary[name][difficulty] = int(pairs)
    return summary
