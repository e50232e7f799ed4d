"""One store row -> `Pair` mapper, shared by generation (runs) and export."""

from __future__ import annotations

import json
from typing import Any

from schemas.pair import Pair


def _attributes(raw: str | dict | None) -> dict[str, str]:
    """The attributes column (JSON text, a dict, or nothing) as a flat str -> str mapping."""
    data = json.loads(raw) if isinstance(raw, str) and raw else raw or {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def pair_from_row(row: dict[str, Any]) -> Pair:
    """A `gold_pairs` row (label after relabels) as a Pair; extra columns are ignored."""
    return Pair(pair_id=row["pair_id"], source=row["source"], query_id=row.get("query_id") or "", query=row["query"],
                title=row["title"], description=row.get("description") or "",
                attributes=_attributes(row.get("attributes")), label=row["label"],
                raw_label=row.get("raw_label") or "", scheme=row["scheme"])
