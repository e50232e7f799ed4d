"""How use cases report progress and notices without printing: events sent to a callback the caller owns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ProgressEvent:
    """Where one long task stands. `task` is a stable id; the same id updates the same bar."""

    task: str
    completed: int
    total: int | None = None
    description: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    finished: bool = False


@dataclass(frozen=True)
class Notice:
    """A message the user should see (a warning, a hint) while a use case runs."""

    message: str
    level: Literal["info", "warning"] = "info"


Event = ProgressEvent | Notice
Reporter = Callable[[Event], None]


def silent(event: Event) -> None:
    """The default reporter: drops every event (library callers, tests, --json runs)."""
