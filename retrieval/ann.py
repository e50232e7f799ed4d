"""FAISS inner-product indexes: exact (flat), HNSW or IVF, with their parameters resolved and recorded.

Vectors are unit-normalised, so inner product is cosine similarity. `auto` picks IVF for large corpora:
on a 2-core machine IVF builds a million vectors in minutes where HNSW takes about an hour.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from schemas.errors import CotgenError

KINDS = ("exact", "hnsw", "ivf")
APPROX_ABOVE = 50_000  # below this an exact scan is fast enough and has perfect recall
APPROX_KIND = "ivf"
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 128},
    "ivf": {"nlist": 0, "nprobe": 8},  # nlist 0 = about sqrt(n); nprobe 8: recall@5 1.0 at 22x exact (bench)
}
TRAIN_POINTS_PER_LIST = 64  # k-means sample size per list: enough for stable centroids, far cheaper than all n


def choose_kind(kind: str, n: int, approx_above: int = APPROX_ABOVE) -> str:
    """`auto` means exact up to `approx_above` vectors and IVF above it."""
    if kind == "auto":
        return APPROX_KIND if n > approx_above else "exact"
    if kind not in KINDS:
        raise CotgenError(f"index.kind: unknown index kind '{kind}' (auto, {', '.join(KINDS)})")
    return kind


def resolve_params(kind: str, n: int, overrides: dict[str, Any] | None = None) -> dict[str, int]:
    """Default parameters for `kind`, updated by `overrides` (only keys that kind knows) and sized for n."""
    defaults = DEFAULT_PARAMS[kind]
    unknown = sorted(set(overrides or {}) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise CotgenError(f"index.params: '{unknown[0]}' is not a parameter of a {kind} index (known: {known})")
    params = {**defaults, **{k: int(v) for k, v in (overrides or {}).items()}}
    if kind == "ivf":
        # sqrt(n) lists, not FAISS's usual 4-16 sqrt(n): k-means and list assignment cost grow with nlist, and
        # on a 2-core CPU that build time matters more than the few extra vectors each probe scans.
        # FAISS wants about 39 training points per list; keep tiny corpora trainable.
        nlist = params["nlist"] or round(math.sqrt(n))
        params["nlist"] = max(1, min(nlist, n // 39 or 1))
        params["nprobe"] = max(1, min(params["nprobe"], params["nlist"]))
    return params


def empty_index(dim: int, kind: str, params: dict[str, int]) -> faiss.Index:
    """An index of `kind` with nothing added (IVF still needs `train`)."""
    if kind == "exact":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # tiny corpora: train anyway instead of warning
        index.cp.niter = 10  # lists need rough centroids only; 10 k-means rounds instead of 25 cut training 2.5x
        return index
    raise CotgenError(f"unknown index kind '{kind}'")


def training_sample(vectors: np.ndarray, nlist: int, seed: int = 0) -> np.ndarray:
    """A random subset of rows big enough to train `nlist` IVF lists."""
    size = min(len(vectors), nlist * TRAIN_POINTS_PER_LIST)
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def build_faiss(vectors: np.ndarray, kind: str, params: dict[str, int]) -> faiss.Index:
    """An index of `kind` holding `vectors` (row i gets id i) whose stored vectors can be reconstructed."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = empty_index(vectors.shape[1], kind, params)
    if kind == "ivf":
        index.train(training_sample(vectors, params["nlist"]))
    index.add(vectors)
    if kind == "ivf":
        index.make_direct_map()  # search rescores candidates from their stored vectors
    configure(index, kind, params)
    return index


def configure(index: faiss.Index, kind: str, params: dict[str, int]) -> None:
    """Apply search-time parameters (efSearch, nprobe); they are not all kept in the FAISS file."""
    if kind == "hnsw":
        index.hnsw.efSearch = params["ef_search"]
    elif kind == "ivf":
        index.nprobe = params["nprobe"]


def search_params(kind: str, params: dict[str, int], allowed: np.ndarray) -> faiss.SearchParameters:
    """Per-call parameters restricting the search to ids in `allowed` (same efSearch/nprobe as the index)."""
    selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    if kind == "hnsw":
        sp = faiss.SearchParametersHNSW(sel=selector, efSearch=params["ef_search"])
    elif kind == "ivf":
        sp = faiss.SearchParametersIVF(sel=selector, nprobe=params["nprobe"])
    else:
        sp = faiss.SearchParameters(sel=selector)
    sp.keep_selector = selector  # the SWIG params do not own the selector; keep it alive with them
    return sp
