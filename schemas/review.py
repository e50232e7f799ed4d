"""An annotator decision on a sample, a pair's gold label, or one step."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

ReviewAction = Literal["accept", "reject", "relabel", "edit", "step", "note", "skip", "undo"]


class Review(BaseModel):
    """Decisions are appended, never overwritten: the latest per target supersedes the rest."""

    review_id: str
    annotator: str
    action: ReviewAction
    pair_id: str
    sample_id: str | None = None
    step_index: int | None = None
    step_correct: bool | None = None
    reason: str = ""
    new_label: str | None = None
    edited_text: str | None = None
    note: str = ""
    seconds: float | None = None
    created_at: datetime
