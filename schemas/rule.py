"""Atomic relevance rules and knowledge entries, the documents retrieval indexes."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field


class Rule(BaseModel):
    """One atomic rule (or a knowledge entry) as written in a Markdown file with front matter.

    `grades` are taosr4 ids (L4..L1), or ids of the rule's `schemes` when it is scheme-specific;
    `schemes` empty means the rule holds under every label scheme. `cues` are short phrases that signal the
    rule applies (e.g. "without", "gas vs electric"); retrieval matches them one by one. `path` is where it
    was read from.
    """

    id: str
    kind: Literal["rule", "knowledge"] = "rule"
    title: str
    text: str
    tags: list[str] = Field(default_factory=list)
    grades: list[str] = Field(default_factory=list)
    schemes: list[str] = Field(default_factory=list)
    cues: list[str] = Field(default_factory=list)
    positive_example: str = ""
    negative_example: str = ""
    path: str = ""

    def applies_to(self, scheme: str) -> bool:
        """True when the rule holds under label scheme `scheme` (scheme-free rules hold everywhere)."""
        return not self.schemes or scheme in self.schemes

    def content_hash(self) -> str:
        """A hash of everything but `path`: moving a file does not change the document."""
        payload = self.model_dump(exclude={"path"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
