"""`cotgen run`: the configured stages, each a small object with one `run`."""

from __future__ import annotations

from typing import Any, Protocol

from cotgen.app.progress import Reporter
from schemas.workspace import Workspace


class StageResult(Protocol):
    """What a stage returns: a typed result the CLI renders, and its JSON form."""

    def to_dict(self) -> dict[str, Any]: ...


class Stage(Protocol):
    """A pipeline step. `run` is idempotent: running it again continues where it stopped."""

    name: str

    def run(self, ws: Workspace, report: Reporter) -> StageResult: ...


# Use-case modules that define pipeline stages, in no particular order ([pipeline].stages orders them).
STAGE_MODULES = ("ingest", "index", "generate", "curate", "export", "review", "train", "evaluate")


def stages() -> dict[str, Stage]:
    """Every stage `cotgen run` knows, by name."""
    import importlib

    found: dict[str, Stage] = {}
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(f"cotgen.app.{name}")
        except ModuleNotFoundError as e:  # TRANSITIONAL: areas not yet moved into cotgen.app
            if e.name != f"cotgen.app.{name}":
                raise
            continue
        for stage in getattr(module, "STAGES", ()):
            found[stage.name] = stage
    return found
