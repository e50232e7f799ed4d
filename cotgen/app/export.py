"""`cotgen export` and `cotgen datasets list|show|diff`: versioned datasets from the store, and their history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cotgen.app.progress import ProgressEvent, Reporter, silent
from cotgen.prompting import load_prompt
from curation.datasets import diff_versions, list_versions, show_version
from curation.export import KINDS, ExportResult, export_dataset
from curation.store import open_store
from schemas.answer import AnswerOrder
from schemas.datasets import DatasetRef
from schemas.pair import Pair
from schemas.workspace import Workspace


def policy_prompt_renderer(ws: Workspace, order: AnswerOrder) -> Callable[[Pair], list[dict]]:
    """What the policy sees for a pair (the [policy] prompt generation uses), in the export's answer order."""
    prompt = load_prompt("policy", ws.config.policy.prompt)

    def render_policy_prompt(pair: Pair) -> list[dict]:
        return prompt.render(pair, ws.config.scheme(pair.scheme), order)

    return render_policy_prompt


def diversity_embedder(ws: Workspace) -> Callable[[list[str]], np.ndarray] | None:
    """The index's embedder for the diversity filter; None while the filter is off (nothing to load)."""
    if ws.config.curation.diversity_threshold is None:
        return None
    from retrieval.embedder import Embedder

    return Embedder(ws.config.index.embedder).encode


def expand_kinds(kinds: list[str] | None, ws: Workspace) -> list[str]:
    """The kinds asked for (`all` means every kind), in first-seen order; default: [export].kinds."""
    asked = list(kinds) if kinds else list(ws.config.export.kinds)
    return list(KINDS) if "all" in asked else list(dict.fromkeys(asked))


def export(ws: Workspace, name: str | None = None, kinds: list[str] | None = None, order: AnswerOrder | None = None,
           report: Reporter = silent) -> ExportResult:
    """Export `name` (default [export].name) as a new version, or nothing when its rows are unchanged."""
    cfg = ws.config.export
    order = order or cfg.format

    def progress(message: str) -> None:
        # A phase, not a count: completed stays 0, so the display shows the phase alone.
        report(ProgressEvent("export", 0, description=f"export: {message}"))

    result = export_dataset(ws, name or cfg.name, expand_kinds(kinds, ws), order, policy_prompt_renderer(ws, order),
                            embed=diversity_embedder(ws), progress=progress)
    report(ProgressEvent("export", 0, description="export: done", finished=True))
    return result


@dataclass
class ExportStageResult:
    """What `cotgen run` records of an export."""

    result: ExportResult

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"name": r.name, "version": r.version, "created": r.created, "content_hash": r.content_hash,
                "counts": r.counts}


class ExportStage:
    """Exports [export] as a new version, or nothing when the rows are unchanged."""

    name = "export"

    def run(self, ws: Workspace, report: Reporter) -> ExportStageResult:
        return ExportStageResult(export(ws, report=report))


STAGES = [ExportStage()]


@dataclass
class VersionList:
    """Every exported version on disk (rows per kind, hash, parent, whether the store has it recorded)."""

    versions: list[dict[str, Any]]

    def to_dict(self) -> list[dict[str, Any]]:
        return self.versions


@dataclass
class VersionDetail:
    """One version's manifest, with its path."""

    manifest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.manifest


@dataclass
class VersionDiff:
    """Pair ids added, removed, changed and unchanged between two versions, per kind."""

    diff: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.diff


def datasets_list(ws: Workspace) -> VersionList:
    """Every exported version; `registered` is None when the workspace has no store yet."""
    if not ws.store_path.exists():
        return VersionList(list_versions(ws.datasets_dir, None))
    with open_store(ws, read_only=True) as store:
        return VersionList(list_versions(ws.datasets_dir, store))


def datasets_show(ws: Workspace, ref: DatasetRef) -> VersionDetail:
    return VersionDetail(show_version(ws.datasets_dir, ref))


def datasets_diff(ws: Workspace, name: str, a: int, b: int) -> VersionDiff:
    return VersionDiff(diff_versions(ws.datasets_dir, name, a, b))
