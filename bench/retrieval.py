"""Retrieval figures: embedding throughput, and exact vs approximate FAISS search on 1,000,000 vectors.

Usage: python bench/retrieval.py [--n 1000000] [--queries 1000] [--data clustered,uniform] [--kinds ivf]
                                 [--nprobe 4,8,16,32] [--ef 64,128,256] [--texts 1000]

Target: approximate recall@5 >= 0.95 at >= 10x the exact index's queries/s.
Vectors are random unit vectors of dimension 384, generated in chunks; one index exists at a time, and
the embedder loads only after them (peak memory is the IVF build, about 3x the 1.5 GB of data at 1M):
- clustered: 200 random topics, 10,000 subtopics around them, points around subtopics with varying
  spread; queries are fresh draws from the same process. Real sentence embeddings look like this.
- uniform: i.i.d. points on the sphere. Every point is about equally far from every other (the top-5
  inner products sit within ~0.03 of the 1,000th), so no index can prune without losing recall: the
  worst case, shown for contrast.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from retrieval.ann import configure, empty_index, resolve_params  # noqa: E402
from retrieval.documents import embedding_text, load_documents  # noqa: E402
from retrieval.embedder import Embedder  # noqa: E402

DIM = 384
CHUNK = 50_000
K = 5
TITLES = ROOT.parent / "shared" / "data" / "crowdflower" / "train_dev.csv"


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Clustered:
    """Two-level Gaussian mixture on the unit sphere (topics -> subtopics -> points)."""

    def __init__(self, seed: int = 0, topics: int = 200, subtopics: int = 10_000):
        rng = np.random.default_rng(seed)
        topic = unit(rng.standard_normal((topics, DIM), dtype=np.float32))
        parent = rng.integers(0, topics, subtopics)
        self.centres = unit(topic[parent] + rng.standard_normal((subtopics, DIM), dtype=np.float32) / np.sqrt(DIM))
        self.spread = rng.uniform(0.8, 1.5, subtopics).astype(np.float32)  # noise norm relative to the centre

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.integers(0, len(self.centres), n)
        noise = rng.standard_normal((n, DIM), dtype=np.float32) * (self.spread[which, None] / np.sqrt(DIM))
        return unit(self.centres[which] + noise)


class Uniform:
    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return unit(rng.standard_normal((n, DIM), dtype=np.float32))


def chunks(source, n: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for start in range(0, n, CHUNK):
        yield source.draw(rng, min(CHUNK, n - start))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def embedding_throughput(count: int) -> dict:
    """docs/s of the default embedder on the shipped rule documents and on real product titles."""
    started = time.perf_counter()
    emb = Embedder()
    emb.encode(["warm up"])
    result = {"embedder": emb.name, "device": emb.device, "load_s": round(time.perf_counter() - started, 2)}
    rule_texts = [embedding_text(d) for d in load_documents(["builtin"])]
    sets = {"rule documents": [rule_texts[i % len(rule_texts)] for i in range(count)]}
    if TITLES.is_file():
        import polars as pl

        titles = pl.read_csv(TITLES, columns=["product_title"])["product_title"].unique(maintain_order=True)
        sets["product titles"] = titles.head(count).to_list()
    for name, texts in sets.items():
        started = time.perf_counter()
        emb.encode(texts)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, len(texts), 64):  # the old way: one call per batch of 64, padded to its longest text
            emb.model.encode(texts[i:i + 64], batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        unsorted = time.perf_counter() - started
        words = sum(len(t.split()) for t in texts) / len(texts)
        result[name] = {"texts": len(texts), "mean_words": round(words, 1), "docs_per_s": round(len(texts) / seconds, 1),
                        "docs_per_s_unsorted_batches_of_64": round(len(texts) / unsorted, 1)}
    return result


def timed_search(index: faiss.Index, queries: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, ids = index.search(queries, K)
    return ids, len(queries) / (time.perf_counter() - started)


def recall_at_k(truth: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(g)) / K for t, g in zip(truth, got, strict=True)]))


def build(kind: str, params: dict, source, n: int, seed: int) -> tuple[faiss.Index, float]:
    """Stream n vectors into a fresh index of `kind`; IVF trains on the first chunks (points are i.i.d.).

    The flat index gets all vectors in one `add`: its storage is one growing array, and chunked adds
    would leave it reallocating (about 3x the data at peak instead of 2x).
    """
    started = time.perf_counter()
    index = empty_index(DIM, kind, params)
    stream = chunks(source, n, seed)
    if kind == "exact":
        data = np.empty((n, DIM), dtype=np.float32)
        for start, chunk in zip(range(0, n, CHUNK), stream, strict=True):
            data[start:start + len(chunk)] = chunk
        index.add(data)
        return index, time.perf_counter() - started
    pending: list[np.ndarray] = []
    if kind == "ivf":
        need = params["nlist"] * 64
        while sum(len(c) for c in pending) < need:
            pending.append(next(stream))
        index.train(np.concatenate(pending)[:need])
    for chunk in [*pending, *stream]:
        index.add(chunk)
    configure(index, kind, params)
    return index, time.perf_counter() - started


def bench_data(name: str, source, args: argparse.Namespace) -> dict:
    queries = source.draw(np.random.default_rng(10_000 + args.seed), args.queries)
    exact, build_s = build("exact", {}, source, args.n, args.seed)
    truth, exact_qps = timed_search(exact, queries)
    out = {"data": name, "n": args.n, "queries": args.queries,
           "exact": {"build_s": round(build_s, 1), "qps": round(exact_qps, 1)}, "approximate": []}
    del exact
    print(f"[{name}] exact IndexFlatIP: build {build_s:.1f} s, {exact_qps:,.0f} queries/s (k={K})", flush=True)
    for kind in args.kinds:
        params = resolve_params(kind, args.n, {"nlist": args.nlist} if kind == "ivf" and args.nlist else None)
        index, build_s = build(kind, params, source, args.n, args.seed)
        print(f"[{name}] {kind} {params}: build {build_s:.1f} s, peak RSS {rss_gb():.1f} GB", flush=True)
        sweep = ("nprobe", args.nprobe) if kind == "ivf" else ("ef_search", args.ef)
        for value in sweep[1]:
            configure(index, kind, {**params, sweep[0]: value})
            got, qps = timed_search(index, queries)
            row = {"kind": kind, "params": {**params, sweep[0]: value}, "build_s": round(build_s, 1),
                   "qps": round(qps, 1), "speedup": round(qps / exact_qps, 1), "recall_at_5": round(recall_at_k(truth, got), 4)}
            out["approximate"].append(row)
            hit = "meets target" if row["recall_at_5"] >= 0.95 and row["speedup"] >= 10 else ""
            print(f"[{name}]   {sweep[0]}={value}: {qps:,.0f} queries/s ({row['speedup']}x exact), "
                  f"recall@5 {row['recall_at_5']:.3f} {hit}", flush=True)
        del index
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--data", default="clustered,uniform")
    parser.add_argument("--kinds", default="ivf", help="approximate kinds to measure: ivf, hnsw (slow to build on 2 cores)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (default: the library's 4*sqrt(n))")
    parser.add_argument("--nprobe", default="4,8,16,32")
    parser.add_argument("--ef", default="64,128,256")
    parser.add_argument("--texts", type=int, default=1000, help="texts per embedding-throughput set (0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    args = parser.parse_args()
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.nprobe = [int(v) for v in args.nprobe.split(",")]
    args.ef = [int(v) for v in args.ef.split(",")]
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs", flush=True)
    results: dict = {}
    sources = {"clustered": Clustered(args.seed), "uniform": Uniform()}
    results["search"] = [bench_data(name, sources[name], args) for name in args.data.split(",") if name]
    if args.texts:  # after the indexes, so the model's ~1 GB does not add to their peak
        results["embedding"] = emb = embedding_throughput(args.texts)
        print(f"embedder {emb['embedder']} on {emb['device']} (load {emb['load_s']} s):", flush=True)
        for name in ("rule documents", "product titles"):
            if name in emb:
                r = emb[name]
                print(f"  {name}: {r['docs_per_s']:,.1f} docs/s ({r['texts']} texts, {r['mean_words']} words each; "
                      f"unsorted batches of 64: {r['docs_per_s_unsorted_batches_of_64']:,.1f})")
    results["peak_rss_gb"] = round(rss_gb(), 2)
    print(f"peak RSS {results['peak_rss_gb']} GB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
