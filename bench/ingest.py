"""Ingest throughput and peak memory on generated pairs (target: >= 300k rows/s, memory flat in file size).

Usage: python bench/ingest.py [--rows 2000000] [--sizes 500000,1000000] [--inputs csv,shards,hf]
`csv` is one CSV file; `shards` the same rows as 8 Parquet files in a directory; `hf` a `Dataset` saved with
`save_to_disk` (copied batch by batch to Parquet; importing `datasets` alone adds about 120 MB of RSS). Each
ingest runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

GENERATE_SQL = """
COPY (
    SELECT 'query ' || (i % 50000) AS query,
           'Product ' || i || ' in colour ' || (i % 97) || ' size ' || (i % 13) AS title,
           'A description of product ' || i || ', made of material ' || (i % 31) || '.' AS description,
           CAST(1 + (hash(i) % 4) AS VARCHAR) AS label
    FROM range({rows}) t(i)
) TO '{path}' (HEADER, DELIMITER ',')
"""

CHILD = """
import json, resource, sys, time
from pathlib import Path
from curation.ingest import ingest
from curation.store import Store
from schemas.config import ColumnMap, SourceConfig
from schemas.labels import BUILTIN_SCHEMES
csv, store = sys.argv[1], sys.argv[2]
source = SourceConfig(name="bench", path=csv, scheme="crowdflower",
                      columns=ColumnMap(query="query", title="title", description="description", label="label"))
start = time.perf_counter()
with Store(Path(store), memory_limit="1GB") as s:
    report = ingest(s, source, BUILTIN_SCHEMES["crowdflower"])
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "added": report.added,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


SHARDS = 8


def make_input(kind: str, csv: Path, workdir: Path) -> Path:
    """The generated rows in the input form `kind` (csv, shards, hf)."""
    if kind == "csv":
        return csv
    if kind == "shards":
        folder = workdir / f"{csv.stem}_shards"
        folder.mkdir(exist_ok=True)
        con = duckdb.connect()
        for i in range(SHARDS):
            con.execute(f"COPY (SELECT * FROM read_csv('{csv}', all_varchar = true) WHERE hash(title) % {SHARDS} = {i}) "
                        f"TO '{folder / f'part-{i}.parquet'}' (FORMAT parquet)")
        return folder
    import polars as pl
    from datasets import Dataset

    folder = workdir / f"{csv.stem}_hf"
    Dataset.from_polars(pl.read_csv(csv, infer_schema=False)).save_to_disk(str(folder))
    return folder


def run_one(rows: int, kind: str, workdir: Path) -> dict:
    csv = workdir / f"pairs_{rows}.csv"
    if not csv.exists():
        duckdb.execute(GENERATE_SQL.format(rows=rows, path=csv))
    source = make_input(kind, csv, workdir)
    store = workdir / f"store_{rows}_{kind}.duckdb"
    out = subprocess.run([sys.executable, "-c", CHILD, str(source), str(store)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in ([source] if source.is_file() else source.rglob("*")) if p.is_file())
    result.update(rows=rows, file_mb=size / 2**20, rows_per_s=rows / result["seconds"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--sizes", default="500000,1000000", help="smaller sizes to show memory is flat")
    parser.add_argument("--inputs", default="csv", help="input forms to time: csv, shards, hf (comma-separated)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s] + [args.rows]
    with tempfile.TemporaryDirectory(prefix="cotgen-bench-ingest-") as tmp:
        print(f"{'input':>6} {'rows':>10} {'file MB':>8} {'seconds':>8} {'rows/s':>10} {'peak RSS MB':>12}")
        for kind in args.inputs.split(","):
            for rows in sizes:
                r = run_one(rows, kind, Path(tmp))
                assert r["added"] == rows, r
                print(f"{kind:>6} {rows:>10,} {r['file_mb']:>8.0f} {r['seconds']:>8.2f} {r['rows_per_s']:>10,.0f} "
                      f"{r['peak_rss_mb']:>12.0f}")
    print(f"target: >= 300,000 rows/s; this process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
