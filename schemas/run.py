"""One generation run: which backend and model wrote which samples, with what prompt and params."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

RunRole = Literal["teacher", "policy"]
RunStatus = Literal["running", "done", "stopped", "failed"]


class Run(BaseModel):
    run_id: str
    name: str
    role: RunRole
    backend: str
    model: str
    prompt_name: str
    prompt_hash: str
    params: dict[str, Any] = Field(default_factory=dict)
    status: RunStatus = "running"
    started_at: datetime
    finished_at: datetime | None = None
