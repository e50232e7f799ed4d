"""What is in the store, for `cotgen status`."""

from __future__ import annotations

from curation.store import Store

PAIRS_BY_SOURCE_SQL = """
SELECT source, scheme, label, count(*) AS pairs FROM pairs GROUP BY ALL ORDER BY source, scheme, label DESC
"""
RUNS_SQL = """
SELECT r.name, r.role, r.model, r.status, count(s.sample_id) AS samples
FROM runs r LEFT JOIN samples s USING (run_id) GROUP BY ALL ORDER BY min(r.started_at)
"""
REVIEWS_SQL = "SELECT annotator, count(*) AS decisions FROM reviews GROUP BY annotator ORDER BY annotator"
DATASETS_SQL = "SELECT name, version, content_hash, created_at FROM dataset_versions ORDER BY name, version"


def workspace_status(store: Store) -> dict:
    return {
        "schema_version": store.schema_version(),
        "pairs": store.query(PAIRS_BY_SOURCE_SQL),
        "total_pairs": store.scalar("SELECT count(*) FROM pairs"),
        "disagreements": store.scalar("SELECT count(DISTINCT pair_id) FROM label_disagreements"),
        "runs": store.query(RUNS_SQL),
        "samples": store.scalar("SELECT count(*) FROM samples"),
        "reviews": store.query(REVIEWS_SQL),
        "datasets": store.query(DATASETS_SQL),
    }
