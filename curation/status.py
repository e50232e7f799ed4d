"""What is in the store, for `cotgen status`."""

from __future__ import annotations

from curation.queries import sql
from curation.store import Store


def workspace_status(store: Store) -> dict:
    """Pairs per source and label, runs with their sample counts, reviews and dataset versions."""
    return {
        "schema_version": store.schema_version(),
        "pairs": store.query(sql("status.pairs_by_source")),
        "total_pairs": store.scalar(sql("status.total_pairs")),
        "disagreements": store.scalar(sql("status.disagreements")),
        "runs": store.query(sql("status.runs")),
        "samples": store.scalar(sql("status.samples")),
        "reviews": store.query(sql("status.reviews")),
        "datasets": store.query(sql("status.datasets")),
    }
