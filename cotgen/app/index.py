"""The rule index use cases: build it from the rule sources, load it checked, describe it, search it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from retrieval.documents import load_documents
from retrieval.index import DOCS_FILE, INDEX_FILE, MANIFEST_FILE, BuildReport, RuleIndex, layout_texts
from retrieval.search import check_template, compose_query, search_text
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.workspace import Workspace

DocKind = Literal["rule", "knowledge"]


def index_dir(ws: Workspace) -> Path:
    """Where the workspace index (config `index.name`) lives."""
    return ws.indexes_dir / ws.config.index.name


def workspace_documents(ws: Workspace) -> list[Rule]:
    """The documents named by `index.rules`, relative directories resolved against the workspace."""
    return load_documents(ws.config.index.rules, base=ws.root, schemes=ws.config.schemes)


@dataclass(frozen=True)
class BuildResult:
    """What `build_index` did, and where the index is."""

    report: BuildReport
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "path": str(self.path)}


def build_index(ws: Workspace, report: Reporter = silent) -> BuildResult:
    """Build or update the workspace index; only changed documents are embedded, an unchanged one is kept."""
    cfg = ws.config.index
    check_template(cfg.query_template)
    docs = workspace_documents(ws)
    total = len(layout_texts(docs))
    done = 0
    description = "embedding rules, knowledge and cues"

    def advance(n: int) -> None:
        nonlocal done
        done += n
        report(ProgressEvent("embed", done, total, description))

    idx = RuleIndex.build(docs, index_dir(ws), cfg.embedder, cfg.kind, params=cfg.params,
                          approx_above=cfg.approx_above, device=cfg.device, batch_size=cfg.batch_size,
                          progress=advance)
    report(ProgressEvent("embed", done, total, description, finished=True))
    assert idx.report is not None
    return BuildResult(idx.report, idx.index_dir)


def load_index(ws: Workspace) -> RuleIndex:
    """The built workspace index; an error when it is missing, corrupt or built with another embedder."""
    return RuleIndex.load(index_dir(ws), embedder=ws.config.index.embedder, device=ws.config.index.device)


@dataclass(frozen=True)
class IndexInfo:
    """The index manifest plus what the rule sources hold now (added/removed/changed since the build)."""

    path: str
    embedder: str
    dim: int
    kind: str
    params: dict[str, int]
    documents: int
    by_kind: dict[str, int]
    built_at: str
    toolkit_version: str
    bytes: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def stale(self) -> int:
        """How many documents differ between the rule sources and the built index."""
        return len(self.added) + len(self.removed) + len(self.changed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rules_by_id(ws: Workspace, wanted: set[str], report: Reporter) -> dict[str, Rule]:
    """The rules of these ids from the workspace index (none when it is not built; a warning says so)."""
    if not wanted:
        return {}
    if not index_dir(ws).exists():
        report(Notice(f"no rule index at {index_dir(ws)}: the judge sees the pairs without their rules", "warning"))
        return {}
    found = {rule.id: rule for rule in load_index(ws).docs if rule.id in wanted}
    if len(found) < len(wanted):
        report(Notice(f"{len(wanted) - len(found)} rule ids of the CoTs are not in the index (rebuilt since?)", "warning"))
    return found


def index_info(ws: Workspace) -> IndexInfo:
    """What the index holds, how it was built, and whether the rule sources changed since."""
    path = index_dir(ws)
    idx = load_index(ws)
    manifest = idx.manifest
    current = {d.id: d.content_hash() for d in workspace_documents(ws)}
    built = manifest.documents
    kinds: dict[str, int] = {}
    for d in idx.docs:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    return IndexInfo(
        path=str(path), embedder=manifest.embedder, dim=manifest.dim, kind=manifest.kind, params=manifest.params,
        documents=manifest.count, by_kind=kinds, built_at=manifest.built_at, toolkit_version=manifest.toolkit_version,
        bytes=sum((path / f).stat().st_size for f in (INDEX_FILE, DOCS_FILE, MANIFEST_FILE)),
        added=sorted(set(current) - set(built)), removed=sorted(set(built) - set(current)),
        changed=sorted(i for i in set(current) & set(built) if current[i] != built[i]),
    )


@dataclass(frozen=True)
class SearchResult:
    """The text searched (the pair through the template, or the text itself) and the hits, best first."""

    query: str
    hits: list[tuple[Rule, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "hits": [{"rank": r, "score": round(s, 4), **d.model_dump()}
                                              for r, (d, s) in enumerate(self.hits, 1)]}


def search(ws: Workspace, text: str, *, item: str | None = None, k: int | None = None,
           kinds: Sequence[DocKind] = ("rule", "knowledge"), tags: list[str] | None = None,
           scheme: str | None = None) -> SearchResult:
    """The documents closest to `text`, or to the pair (`text`, `item`) composed by `index.query_template`."""
    if scheme is not None:
        ws.config.scheme(scheme)
    query = text
    if item is not None:
        check_template(ws.config.index.query_template)
        pair = Pair(pair_id="", source="cli", query=text, title=item, label="", scheme=scheme or "")
        query = compose_query(pair, ws.config.index.query_template)
    idx = load_index(ws)
    return SearchResult(query, search_text(idx, query, k or ws.config.index.k, kinds=tuple(kinds), scheme=scheme,
                                           tags=tags))


@dataclass(frozen=True)
class IndexStageResult:
    """The index stage's outcome (the build report; `cotgen run` renders it like `index build`)."""

    build: BuildResult

    def to_dict(self) -> dict[str, Any]:
        r = self.build.report
        return {"documents": r.documents, "embedded": r.embedded, "written": r.written}


class IndexStage:
    """Builds or updates the workspace index; a no-op when the rule sources did not change."""

    name = "index"

    def run(self, ws: Workspace, report: Reporter) -> IndexStageResult:
        return IndexStageResult(build_index(ws, report))


STAGES = [IndexStage()]

