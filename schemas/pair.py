"""A labelled (query, item) pair, the unit everything else is keyed by."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Pair(BaseModel):
    """One (query, item) pair with its gold grade under `scheme`."""

    pair_id: str
    source: str
    query: str
    title: str
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    label: str
    raw_label: str = ""
    scheme: str
    query_id: str = ""
