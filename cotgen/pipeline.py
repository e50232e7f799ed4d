"""`cotgen run`: configured stages, each a small object with one `run`."""

from __future__ import annotations

from typing import Any, Protocol

from schemas.workspace import Workspace


class Stage(Protocol):
    """A pipeline step. `run` is idempotent: running it again continues where it stopped."""

    name: str

    def run(self, ws: Workspace) -> dict[str, Any]: ...
