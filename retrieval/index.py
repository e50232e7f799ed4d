"""A persisted FAISS index over rules and knowledge entries.

Each document is indexed as several views: its own text (row i is document i) and then, document by
document, one row per cue phrase. A document scores (s_doc + w * s_cue) / (1 + w), where s_cue is its best
cue similarity (s_doc when it has no cues) and w is `cue_weight`: the whole text carries the topic, a cue
phrase carries the one signal ("without", "for iphone") a long text dilutes.

On disk an index is a directory: `index.faiss`, `docs.parquet` (the documents), `manifest.json`
(embedder and dimension, document hashes, build parameters, file checksums, toolkit version). Files are
replaced one by one with the manifest last, and loading checks every checksum, so a half-written or
edited index is reported instead of silently searched.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from retrieval.ann import APPROX_ABOVE, build_faiss, choose_kind, configure, resolve_params, search_params
from retrieval.documents import embedding_text
from retrieval.embedder import DEFAULT_EMBEDDER, Embedder, Progress
from schemas.errors import CotgenError
from schemas.rule import Rule

INDEX_FILE = "index.faiss"
DOCS_FILE = "docs.parquet"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
# Probe recall@5 (tests/retrieval_probes.jsonl) by w: 0 -> 0.73, 0.25 -> 0.79, 0.5 -> 0.82, 1 -> 0.77, 2 -> 0.76.
CUE_WEIGHT = 0.5
CANDIDATE_VIEWS = 1024  # views fetched before rescoring; a rule base has fewer, so its search is exact
REBUILD_HINT = "rebuild it with `cotgen index build`"


class Manifest(BaseModel):
    """What an index was built from and with; `documents` maps id -> content hash in index order."""

    format_version: int
    toolkit_version: str
    embedder: str
    dim: int
    metric: str = "inner_product"
    kind: str
    params: dict[str, int]
    count: int
    views: int
    cue_weight: float
    documents: dict[str, str]
    files: dict[str, str]
    built_at: str


@dataclass
class BuildReport:
    """What a build did: `embedded` documents had a text go through the model, `reused` came from the cache."""

    documents: int
    embedded: int
    reused: int
    texts_embedded: int
    kind: str
    params: dict[str, int]
    written: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def toolkit_version() -> str:
    try:
        return metadata.version("cotgen")
    except metadata.PackageNotFoundError:
        return "unknown"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_docs(docs: list[Rule], path: Path) -> None:
    rows = [{**d.model_dump(), "hash": d.content_hash()} for d in docs]
    pq.write_table(pa.Table.from_pylist(rows), path)


def _read_docs(path: Path) -> list[Rule]:
    try:
        rows = pq.read_table(path).to_pylist()
        return [Rule.model_validate({k: v for k, v in row.items() if k != "hash"}) for row in rows]
    except (pa.ArrowException, OSError, ValidationError) as e:
        raise CotgenError(f"{path}: corrupt document table ({str(e).splitlines()[0]}); {REBUILD_HINT}") from None


def read_manifest(index_dir: Path) -> Manifest:
    """The manifest of the index in `index_dir`; a clear error when there is none or it is unreadable."""
    path = index_dir / MANIFEST_FILE
    if not path.is_file():
        raise CotgenError(f"{index_dir}: no index here ({MANIFEST_FILE} is missing); build it with `cotgen index build`")
    try:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, OSError, UnicodeDecodeError) as e:
        raise CotgenError(f"{path}: corrupt manifest ({str(e).splitlines()[0]}); {REBUILD_HINT}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise CotgenError(f"{path}: index format {manifest.format_version}, this toolkit reads {FORMAT_VERSION}; "
                          f"{REBUILD_HINT}")
    return manifest


def view_layout(docs: list[Rule]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Which document owns each FAISS row, and each document's cue rows (after the n document rows)."""
    counts = np.array([len(d.cues) for d in docs], dtype=np.int64)
    owners = np.concatenate([np.arange(len(docs)), np.repeat(np.arange(len(docs)), counts)]).astype(np.int64)
    starts = len(docs) + np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(docs) else counts
    return owners, [np.arange(start, start + n, dtype=np.int64) for start, n in zip(starts, counts, strict=True)]


def layout_texts(docs: list[Rule]) -> list[str]:
    """The text of every FAISS row, in row order (see `view_layout`)."""
    return [embedding_text(d) for d in docs] + [cue for d in docs for cue in d.cues]


@dataclass
class RuleIndex:
    """Documents, their FAISS index and the manifest that ties them together."""

    index_dir: Path
    manifest: Manifest
    docs: list[Rule]
    faiss_index: faiss.Index
    report: BuildReport | None = None
    device: str = "auto"
    _by_id: dict[str, int] = field(default_factory=dict, repr=False)
    _owners: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    _cue_rows: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {d.id: i for i, d in enumerate(self.docs)}
        self._owners, self._cue_rows = view_layout(self.docs)

    @classmethod
    def load(cls, index_dir: Path, embedder: str | None = None, device: str = "auto") -> RuleIndex:
        """Open a built index; missing, corrupt or (when `embedder` is given) mismatched indexes are errors."""
        index_dir = Path(index_dir)
        manifest = read_manifest(index_dir)
        if embedder is not None and embedder != manifest.embedder:
            raise CotgenError(f"{index_dir}: built with embedder '{manifest.embedder}' (dim {manifest.dim}), "
                              f"but '{embedder}' is configured; {REBUILD_HINT}")
        for name in (INDEX_FILE, DOCS_FILE):
            path = index_dir / name
            if not path.is_file():
                raise CotgenError(f"{path}: missing; {REBUILD_HINT}")
            if file_sha256(path) != manifest.files.get(name):
                raise CotgenError(f"{path}: corrupt (its checksum does not match {MANIFEST_FILE}); {REBUILD_HINT}")
        try:
            index = faiss.read_index(str(index_dir / INDEX_FILE))
        except RuntimeError as e:
            raise CotgenError(f"{index_dir / INDEX_FILE}: corrupt FAISS file ({str(e).splitlines()[0]}); "
                              f"{REBUILD_HINT}") from None
        docs = _read_docs(index_dir / DOCS_FILE)
        hashes = {d.id: d.content_hash() for d in docs}
        views = len(docs) + sum(len(d.cues) for d in docs)
        if (index.d, index.ntotal, views, len(docs)) != (manifest.dim, manifest.views, manifest.views, manifest.count) \
                or hashes != manifest.documents:
            raise CotgenError(f"{index_dir}: {INDEX_FILE}, {DOCS_FILE} and {MANIFEST_FILE} disagree; {REBUILD_HINT}")
        configure(index, manifest.kind, manifest.params)
        return cls(index_dir=index_dir, manifest=manifest, docs=docs, faiss_index=index, device=device)

    @classmethod
    def build(cls, docs: list[Rule], index_dir: Path, embedder: str = DEFAULT_EMBEDDER, kind: str = "auto", *,
              params: dict[str, int] | None = None, approx_above: int = APPROX_ABOVE, device: str = "auto",
              batch_size: int = 32, cache_root: Path | None = None, progress: Progress | None = None) -> RuleIndex:
        """Embed `docs` (only texts missing from the cache go through the model), index and persist them.

        Idempotent: when `index_dir` already holds this exact index nothing is rewritten. `progress` is
        called with the number of texts done (see `layout_texts` for how many there are).
        """
        if not docs:
            raise CotgenError("no documents to index: the rule sources hold no .md files")
        index_dir = Path(index_dir)
        started = time.monotonic()
        hashes = {d.id: d.content_hash() for d in docs}
        if len(hashes) != len(docs):
            raise CotgenError("documents: ids must be unique")
        texts = layout_texts(docs)
        resolved_kind = choose_kind(kind, len(texts), approx_above)
        resolved = resolve_params(resolved_kind, len(texts), params)
        current = cls._current(index_dir, embedder, resolved_kind, resolved, hashes)
        if current is not None:
            current.report = BuildReport(len(docs), 0, len(docs), 0, resolved_kind, resolved, False,
                                         round(time.monotonic() - started, 3))
            current.device = device
            return current
        model = Embedder(embedder, device=device, batch_size=batch_size, cache_root=cache_root)
        vectors, missed = model.encode_cached(texts, progress)
        index = build_faiss(vectors, resolved_kind, resolved)
        manifest = cls._persist(index_dir, docs, index, embedder, resolved_kind, resolved, hashes)
        owners, _ = view_layout(docs)
        embedded = len(set(owners[missed].tolist()))
        report = BuildReport(len(docs), embedded, len(docs) - embedded, len(missed), resolved_kind, resolved, True,
                             round(time.monotonic() - started, 3))
        return cls(index_dir=index_dir, manifest=manifest, docs=list(docs), faiss_index=index, report=report,
                   device=device)

    @classmethod
    def _current(cls, index_dir: Path, embedder: str, kind: str, params: dict[str, int],
                 hashes: dict[str, str]) -> RuleIndex | None:
        """The index already in `index_dir` when it was built from exactly these inputs, else None."""
        if not (index_dir / MANIFEST_FILE).is_file():
            return None
        try:
            existing = cls.load(index_dir)
        except CotgenError:
            return None  # corrupt or stale: rebuilt from scratch below
        m = existing.manifest
        same = (m.embedder, m.kind, m.params, m.cue_weight) == (embedder, kind, params, CUE_WEIGHT)
        return existing if same and list(m.documents.items()) == list(hashes.items()) else None

    @staticmethod
    def _persist(index_dir: Path, docs: list[Rule], index: faiss.Index, embedder: str, kind: str,
                 params: dict[str, int], hashes: dict[str, str]) -> Manifest:
        index_dir.mkdir(parents=True, exist_ok=True)
        names = (INDEX_FILE, DOCS_FILE, MANIFEST_FILE)
        staged = {name: index_dir / f".{name}.{os.getpid()}.tmp" for name in names}
        try:
            faiss.write_index(index, str(staged[INDEX_FILE]))
            _write_docs(docs, staged[DOCS_FILE])
            manifest = Manifest(
                format_version=FORMAT_VERSION, toolkit_version=toolkit_version(), embedder=embedder, dim=index.d,
                kind=kind, params=params, count=len(docs), views=index.ntotal, cue_weight=CUE_WEIGHT,
                documents=hashes, files={name: file_sha256(staged[name]) for name in (INDEX_FILE, DOCS_FILE)},
                built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            staged[MANIFEST_FILE].write_text(json.dumps(manifest.model_dump(), indent=2) + "\n", encoding="utf-8")
            for name in names:  # manifest last: until it lands, the old manifest's checksums reject the new files
                os.replace(staged[name], index_dir / name)
        finally:
            for path in staged.values():
                path.unlink(missing_ok=True)
        return manifest

    @functools.cached_property
    def embedder(self) -> Embedder:
        """The embedder this index was built with (queries must use the same one)."""
        emb = Embedder(self.manifest.embedder, device=self.device)
        if emb.dim != self.manifest.dim:
            raise CotgenError(f"{self.index_dir}: built with dimension {self.manifest.dim}, but embedder "
                              f"'{emb.name}' now gives {emb.dim}; {REBUILD_HINT}")
        return emb

    def get(self, rule_id: str) -> Rule:
        """The document with id `rule_id`."""
        if rule_id not in self._by_id:
            raise CotgenError(f"{self.index_dir}: no rule or knowledge entry with id '{rule_id}'")
        return self.docs[self._by_id[rule_id]]

    def search_vectors(self, queries: np.ndarray, k: int,
                       allowed: np.ndarray | None = None) -> list[list[tuple[Rule, float]]]:
        """Top-k documents (best first) for each unit-normalised query row, among the `allowed` documents.

        FAISS proposes candidate documents from their best views; each candidate is then scored exactly
        from its stored vectors, so a document's score does not depend on which of its views were fetched.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = None if allowed is None else np.flatnonzero(np.isin(self._owners, allowed))
        if rows is not None and len(rows) == 0:
            return [[] for _ in range(len(queries))]
        if len(queries) == 0:
            return []
        pool = len(self._owners) if rows is None else len(rows)
        sp = None if rows is None else search_params(self.manifest.kind, self.manifest.params, rows)
        _, ids = self.faiss_index.search(queries, min(pool, max(CANDIDATE_VIEWS, 32 * k)), params=sp)
        results = []
        for query, row_ids in zip(queries, ids, strict=True):
            candidates = np.unique(self._owners[row_ids[row_ids >= 0]])
            scores = self._score(query, candidates)
            best = np.argsort(-scores, kind="stable")[:k]
            results.append([(self.docs[candidates[j]], float(scores[j])) for j in best])
        return results

    def _score(self, query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(s_doc + w * s_cue) / (1 + w) for each candidate document (see the module docstring)."""
        cue_rows = [self._cue_rows[c] for c in candidates]
        rows = np.concatenate([candidates, *cue_rows]).astype(np.int64)
        sims = self.faiss_index.reconstruct_batch(rows) @ query
        doc_sims = sims[:len(candidates)]
        cue_sims = doc_sims.copy()
        offset = len(candidates)
        for i, cr in enumerate(cue_rows):
            if len(cr):
                cue_sims[i] = sims[offset:offset + len(cr)].max()
            offset += len(cr)
        w = self.manifest.cue_weight
        return (doc_sims + w * cue_sims) / (1 + w)
