"""Atomic relevance rules and knowledge entries, the documents retrieval indexes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Rule(BaseModel):
    """One atomic rule (or a knowledge entry) as written in a Markdown file with front matter."""

    id: str
    kind: Literal["rule", "knowledge"] = "rule"
    title: str
    text: str
    tags: list[str] = Field(default_factory=list)
    grades: list[str] = Field(default_factory=list)
    schemes: list[str] = Field(default_factory=list)
    positive_example: str = ""
    negative_example: str = ""
