"""A parsed chain-of-thought sample and its parse status."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ParseStatus = Literal["ok", "partial", "no_label", "empty", "error"]

STEP_NAMES = (
    "query_understanding",
    "item_understanding",
    "category_matching",
    "attribute_matching",
    "relevance_judgement",
)


class Step(BaseModel):
    """One reasoning step; `name` is one of STEP_NAMES or "other"."""

    name: str
    text: str


class Sample(BaseModel):
    """One model answer for one pair: the raw text, its steps and the label it ends in."""

    sample_id: str
    run_id: str
    pair_id: str
    sample_index: int
    raw_text: str
    steps: list[Step] = Field(default_factory=list)
    predicted_label: str | None = None
    label_probs: dict[str, float] | None = None
    parse_status: ParseStatus = "ok"
    parse_reason: str = ""
    consistent: bool = True
    correct: bool | None = None
