"""Sentence-transformers embeddings: batched, unit-normalised, on the best device, with an on-disk cache.

Document vectors are cached under `<cache>/embeddings/<embedder>/<hash>.npy`, keyed by a hash of the
embedder name and the exact text, so rebuilding an index embeds only documents whose text changed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from schemas.errors import CotgenError
from schemas.models import cache_dir, resolve_model

DEFAULT_EMBEDDER = "bundled:all-minilm-l6-v2"
SORT_WINDOW = 1024  # texts per encode call: long enough to sort by length, short enough for a moving progress bar
Progress = Callable[[int], None]


def pick_device(device: str = "auto") -> str:
    """`auto` picks cuda, then mps, then cpu."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.lru_cache(maxsize=4)
def _load_model(name: str, device: str):  # -> SentenceTransformer (import kept lazy: it costs seconds)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weight-loading bar would interleave with our own progress output
    path = resolve_model(name)
    try:
        return SentenceTransformer(path, device=device)
    except (OSError, ValueError) as e:
        raise CotgenError(f"embedder '{name}': cannot load a sentence-transformers model from {path}: {e}") from None


def text_hash(embedder: str, text: str) -> str:
    return hashlib.sha256(f"{embedder}\0{text}".encode()).hexdigest()


class EmbeddingCache:
    """One .npy file per (embedder, text) hash; writes are atomic, so concurrent builds cannot corrupt it."""

    def __init__(self, root: Path, embedder: str):
        self.dir = root / re.sub(r"[^A-Za-z0-9._-]+", "_", embedder)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        try:
            vec = np.load(self._path(key), allow_pickle=False)
        except (OSError, ValueError):
            return None  # a missing or unreadable entry is simply embedded again
        return vec if vec.ndim == 1 and vec.dtype == np.float32 else None

    def put(self, key: str, vec: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, vec.astype(np.float32), allow_pickle=False)
        os.replace(tmp, path)


class Embedder:
    """A named sentence-transformers model; the model loads once per process and device."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, device: str = "auto", batch_size: int = 32,
                 cache_root: Path | None = None):
        self.name = name
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.cache = EmbeddingCache(cache_root or cache_dir() / "embeddings", name)

    @property
    def model(self):
        return _load_model(self.name, self.device)

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Unit-normalised float32 vectors, one row per text, embedded in batches."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # sentence-transformers sorts each call's texts by length, so a call of many batches pads far less.
        for start in range(0, len(texts), SORT_WINDOW):
            window = list(texts[start:start + SORT_WINDOW])
            out[start:start + len(window)] = self.model.encode(
                window, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
            if progress is not None:
                progress(len(window))
        return out

    def encode_cached(self, texts: Sequence[str], progress: Progress | None = None) -> tuple[np.ndarray, list[int]]:
        """Vectors for `texts`, embedding only cache misses; returns (vectors, positions that were embedded).

        When every text is cached the model is not even loaded.
        """
        keys = [text_hash(self.name, t) for t in texts]
        cached = [self.cache.get(key) for key in keys]
        dims = {v.shape[0] for v in cached if v is not None}
        missing = [i for i, v in enumerate(cached) if v is None]
        if missing or len(dims) != 1:
            dim = self.dim
            missing = [i for i, v in enumerate(cached) if v is None or v.shape[0] != dim]
        else:
            dim = dims.pop()
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, vec in enumerate(cached):
            if vec is not None and vec.shape[0] == dim:
                out[i] = vec
        if progress is not None and len(missing) < len(texts):
            progress(len(texts) - len(missing))
        if missing:
            fresh = self.encode([texts[i] for i in missing], progress)
            for i, vec in zip(missing, fresh, strict=True):
                out[i] = vec
                self.cache.put(keys[i], vec)
        return out, missing
