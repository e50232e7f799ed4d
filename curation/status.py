"""What is in the store, for `cotgen status`."""

from __future__ import annotations

from curation.queries import sql
from curation.runs import holder_alive
from curation.stats import list_runs
from curation.store import Store


def _runs(store: Store) -> list[dict]:
    """Runs with their sample counts; a `running` run whose holder died (killed, crashed) shows as stopped.

    `gold_shown`: the run's prompts showed the gold label, so its agreement with gold is label compliance."""
    shown = {r.name for r in list_runs(store) if r.gold_shown}
    out = []
    for r in store.query(sql("status.runs")):
        pid, host, beat = r.pop("lease_pid"), r.pop("lease_host"), r.pop("heartbeat_at")
        if r["status"] == "running" and not holder_alive(pid, host, beat):
            r["status"] = "stopped"
        out.append({**r, "gold_shown": r["name"] in shown})
    return out


def workspace_status(store: Store) -> dict:
    """Pairs per source and label, runs with their sample counts, reviews and dataset versions."""
    return {
        "schema_version": store.schema_version(),
        "pairs": store.query(sql("status.pairs_by_source")),
        "total_pairs": store.scalar(sql("status.total_pairs")),
        "disagreements": store.scalar(sql("status.disagreements")),
        "runs": _runs(store),
        "samples": store.scalar(sql("status.samples")),
        "reviews": store.query(sql("status.reviews")),
        "datasets": store.query(sql("status.datasets")),
    }
