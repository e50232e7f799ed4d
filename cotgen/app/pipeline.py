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


def stages() -> dict[str, Stage]:
    """Every stage `cotgen run` knows, by name ([pipeline].stages orders them). Review has none: it is a person's work."""
    # Imported here so that `cotgen --help` and commands without stages do not load every use case.
    from cotgen.app import curate, evaluate, export, generate, index, ingest, judge, train

    modules = (ingest, index, generate, judge, curate, export, train, evaluate)
    return {stage.name: stage for module in modules for stage in module.STAGES}
