"""TaoSR-SHE's diversified data filtering: drop reasoning that nearly repeats reasoning already kept."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Embed = Callable[[list[str]], np.ndarray]
BLOCK = 1024


def _unit(vectors: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


def _greedy_block(block: np.ndarray, blocked: np.ndarray, threshold: float) -> np.ndarray:
    """Within one block, keep a row unless it is blocked or too close to a row kept before it."""
    sims = block @ block.T
    kept: list[int] = []
    for i in range(len(block)):
        if blocked[i] or (kept and sims[i, kept].max() >= threshold):
            continue
        kept.append(i)
    mask = np.zeros(len(block), dtype=bool)
    mask[kept] = True
    return mask


def _keep_global(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy in row order across all rows; kept rows go into a FAISS inner-product index block by block."""
    import faiss  # only when the filter runs: the import costs a CLI start-up noticeable time

    index = faiss.IndexFlatIP(vectors.shape[1])
    keep = np.zeros(len(vectors), dtype=bool)
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start:start + BLOCK]
        if index.ntotal:
            sims, _ = index.search(block, 1)
            blocked = sims[:, 0] >= threshold
        else:
            blocked = np.zeros(len(block), dtype=bool)
        mask = _greedy_block(block, blocked, threshold)
        keep[start:start + len(block)] = mask
        index.add(block[mask])
    return keep


def _keep_per_group(vectors: np.ndarray, groups: list[str], threshold: float) -> np.ndarray:
    keep = np.zeros(len(vectors), dtype=bool)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for rows in members.values():
        idx = np.asarray(rows)
        keep[idx] = _greedy_block(vectors[idx], np.zeros(len(idx), dtype=bool), threshold)
    return keep


def diverse(texts: list[str], groups: list[str] | None, embed: Embed, threshold: float) -> np.ndarray:
    """Which texts to keep, taken in the given order (best first): a text goes when its cosine similarity
    to an earlier kept one reaches `threshold` — within its group when `groups` is given, else anywhere."""
    if not texts:
        return np.zeros(0, dtype=bool)
    vectors = _unit(np.asarray(embed(texts)))
    if groups is None:
        return _keep_global(vectors, threshold)
    return _keep_per_group(vectors, groups, threshold)
