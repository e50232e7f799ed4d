"""Curation at scale: statistics + difficulty + DPO + GRPO selection + export on 1,000,000 pairs x 8 samples.

Target: under 60 s in total with peak RSS under 4 GB on a 2-core machine. The same statistics and
selections are also done in pandas (on a subset when the full set would not fit), and the ratio printed.

Usage: python bench/curate.py [--pairs 1000000] [--n 8] [--dir /tmp/cotgen-bench-curate] [--pandas-pairs 250000]
The store is generated once in DuckDB SQL (kept under --dir; --regenerate to rebuild). Each measured part
runs in a fresh subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Label mix close to CrowdFlower's (L4 59%, L3 17%, L2 15%, L1 8%); c of n skewed high (pass@1 near TaoSR1's).
GENERATE_SQL = [
    """INSERT INTO pairs
    SELECT substr(md5('p' || i), 1, 16), 'bench', substr(md5('q' || (i // 10)), 1, 16),
           ['red', 'blue', 'large', 'cheap', 'wireless'][1 + (i // 10) % 5] || ' ' ||
           ['shoes', 'lamp', 'charger', 'sofa', 'kettle', 'desk', 'mug'][1 + (i // 50) % 7] || ' ' || (i // 10),
           'Product ' || i || ' ' || ['running shoe', 'table lamp', 'usb charger', 'sofa bed', 'kettle'][1 + i % 5]
               || ' in colour ' || (i % 97),
           '', NULL, label, label, 'taosr4', 'bench-ingest', i
    FROM (SELECT i, CASE WHEN hash(i) % 100 < 59 THEN 'L4' WHEN hash(i) % 100 < 76 THEN 'L3'
                         WHEN hash(i) % 100 < 92 THEN 'L2' ELSE 'L1' END AS label
          FROM range({pairs}) t(i))""",
    """INSERT INTO runs (run_id, name, role, backend, model, prompt_name, prompt_hash, params, status, started_at)
    VALUES ('bench-teacher', 'teacher', 'teacher', 'openai', 'bench-teacher-model', 'teacher.v1', 'aaa', '{{}}', 'done',
            TIMESTAMP '2025-01-01 10:00:00'),
           ('bench-policy', 'policy', 'policy', 'vllm', 'bench-policy-model', 'policy.v1', 'bbb', '{{}}', 'done',
            TIMESTAMP '2025-01-02 10:00:00')""",
    # A temp table of the samples to write: label, parse status, consistency drawn per (pair, j).
    """CREATE OR REPLACE TEMP TABLE gen AS
    WITH p AS (
        SELECT pair_id, query, title, label,
               least({n}, floor(({n} + 1) * pow((hash(pair_id) % 10000) / 10000.0, 0.45)))::INTEGER AS c
        FROM pairs
    ), s AS (
        SELECT p.*, j, hash(pair_id, j) % 100 AS h FROM p CROSS JOIN range({n}) t(j)
    )
    SELECT pair_id || ':' || j AS sample_id, 'bench-policy' AS run_id, pair_id, j, query, title,
           CASE WHEN h < 1 THEN NULL WHEN j < c THEN label
                ELSE list_filter(['L4', 'L3', 'L2', 'L1'], lambda x: x <> label)[(1 + hash(pair_id, j, 7) % 3)::BIGINT] END AS predicted,
           CASE WHEN h < 1 THEN 'no_label' WHEN h < 3 THEN 'partial' ELSE 'ok' END AS status,
           h % 50 <> 7 AS consistent
    FROM s
    UNION ALL
    SELECT pair_id || ':t', 'bench-teacher', pair_id, 0, query, title,
           CASE WHEN hash(pair_id, 't') % 100 < 85 THEN label ELSE (CASE WHEN label = 'L1' THEN 'L2' ELSE 'L1' END) END,
           'ok', true
    FROM p""",
    """INSERT INTO samples (sample_id, run_id, pair_id, sample_index, steps, predicted_label, parse_status, consistent)
    SELECT sample_id, run_id, pair_id, j,
           '[{{"name":"query_understanding","text":"The shopper wants ' || query || '."}},'
           || '{{"name":"item_understanding","text":"The item is ' || title || '."}},'
           || '{{"name":"category_matching","text":"Category ' || (j % 3) || ' of the query."}},'
           || '{{"name":"attribute_matching","text":"Colour and size checked (' || j || ')."}},'
           || '{{"name":"relevance_judgement","text":"So the grade is ' || coalesce(predicted, '?') || '."}}]',
           predicted, status, consistent
    FROM gen""",
    """INSERT INTO completions (request_key, run_id, pair_id, sample_index, text)
    SELECT sample_id, run_id, pair_id, j,
           CASE WHEN predicted IS NULL THEN 'I am not sure about ' || title || '.'
                ELSE 'Label: ' || predicted || chr(10) || '1. Query understanding: The shopper wants ' || query
                     || '.' || chr(10) || '2. Item understanding: The item is ' || title || '.' || chr(10)
                     || '3. Category matching: Category ' || (j % 3) || ' of the query.' || chr(10)
                     || '4. Attribute matching: Colour and size checked (' || j || ').' || chr(10)
                     || '5. Relevance judgement: So the grade is ' || predicted || '.' END
    FROM gen""",
]

SYSTEM = ("You judge how well an e-commerce item serves a shopper's search query.\n"
          "Grades, best first: L4 (Excellent), L3 (Related), L2 (Mismatch), L1 (Irrelevant).\n"
          'Write "Label: <grade id>" on the first line, then your reasoning in five numbered steps.')


def bench_prompt(pair) -> list[dict]:
    """The shape of cotgen's policy prompt (system + user), without Jinja: see `prompt_cost` for the real one."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Query: {pair.query}\nItem title: {pair.title}"}]


DONE = "generated.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(ws_dir: Path, pairs: int, n: int) -> dict:
    from cotgen.app.workspace import render_config
    from curation.store import Store

    shutil.rmtree(ws_dir, ignore_errors=True)
    ws_dir.mkdir(parents=True)
    (ws_dir / "cotgen.toml").write_text(render_config(example=False), encoding="utf-8")
    start = time.perf_counter()
    with Store(ws_dir / "store.duckdb", memory_limit="4GB") as store:
        for sql in GENERATE_SQL:
            store.con.execute(sql.format(pairs=pairs, n=n))
        samples = store.scalar("SELECT count(*) FROM samples WHERE run_id = 'bench-policy'")
    result = {"seconds": time.perf_counter() - start, "policy_samples": samples, "pairs": pairs,
              "store_mb": (ws_dir / "store.duckdb").stat().st_size / 2**20}
    (ws_dir / DONE).write_text(json.dumps(result))
    return result


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_duckdb(ws_dir: Path) -> dict:
    """The toolkit's own path: the curate stage (statistics + difficulty), then export of DPO + GRPO."""
    from curation.difficulty import curate
    from curation.export import export_dataset
    from curation.stats import resolve_runs
    from curation.store import open_store
    from schemas.workspace import Workspace

    ws = Workspace.open(ws_dir)
    shutil.rmtree(ws.datasets_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    with open_store(ws) as store:
        stats, bins = curate(store, resolve_runs(store, ["policy"]), ws.config.curation)
    curate_s, curate_cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    phases: list[tuple[str, float, float]] = [("open", time.perf_counter(), cpu_seconds())]
    result = export_dataset(ws, "bench", ["dpo", "grpo"], "label_first", bench_prompt,
                            progress=lambda msg: phases.append((msg, time.perf_counter(), cpu_seconds())))
    end = time.perf_counter()
    closing = [*phases[1:], ("end", end, cpu_seconds())]
    steps = [(name, nxt - at, ncpu - acpu) for (name, at, acpu), (_n, nxt, ncpu) in zip(phases, closing, strict=True)]
    times = {"curate: statistics + difficulty": (curate_s, curate_cpu),
             "export (incl. DPO + GRPO selection)": (end - phases[0][1], closing[-1][2] - phases[0][2])}
    return {"times": times, "export_phases": steps, "total": end - t0, "cpu": cpu_seconds() - cpu0,
            "curate_cpu": curate_cpu, "load": [load_before, os.getloadavg()[0]], "peak_rss_mb": peak_rss_mb(),
            "pass_at_k": stats[0].pass_at_k, "pairs": stats[0].pairs, "samples": stats[0].samples,
            "difficulty": bins["policy"], "counts": result.counts, "dpo": result.selection["dpo"]["pairs_by_case"],
            "grpo": {k: result.selection["grpo"][k] for k in ("kept", "rows", "cv_before", "cv_after")},
            "dataset_mb": sum(p.stat().st_size for p in result.path.rglob("*") if p.is_file()) / 2**20}


def run_pandas(ws_dir: Path, subset_pairs: int, gamma: float = 0.5, cap: int = 2) -> dict:
    """The same statistics and selections in pandas, on the first `subset_pairs` pairs (by pair order)."""
    import math

    import duckdb
    import numpy as np
    import pandas as pd

    con = duckdb.connect(str(ws_dir / "store.duckdb"), read_only=True)
    t0 = time.perf_counter()
    pairs = con.sql(f"SELECT pair_id, query_id, label FROM pairs ORDER BY source_row LIMIT {subset_pairs}").df()
    wanted = pairs[["pair_id"]]
    con.register("wanted", wanted)
    samples = con.sql("SELECT s.sample_id, s.run_id, s.pair_id, s.predicted_label, s.parse_status, s.consistent, "
                      "c.text FROM samples s JOIN wanted USING (pair_id) JOIN completions c ON c.request_key = s.sample_id"
                      ).df()
    load = time.perf_counter() - t0
    con.close()

    cpu0 = cpu_seconds()
    t = time.perf_counter()
    s = samples.merge(pairs, on="pair_id")
    s["predicted"] = s["predicted_label"].where(s["parse_status"].isin(["ok", "partial"]))
    s["right"] = s["predicted"] == s["label"]
    s["parsed"] = s["predicted"].notna()
    pol = s[s["run_id"] == "bench-policy"]
    counts = pol.groupby("pair_id").agg(n=("right", "size"), c=("right", "sum"), parsed=("parsed", "sum"),
                                        gold=("label", "first"))
    votes = pol[pol["parsed"]].groupby(["pair_id", "predicted"]).size().rename("votes").reset_index()
    votes = votes.sort_values(["pair_id", "votes", "predicted"], ascending=[True, False, True])
    counts["majority"] = votes.drop_duplicates("pair_id").set_index("pair_id")["predicted"]
    nc = counts.groupby(["n", "c"]).size().rename("pairs").reset_index()
    pass_at_k = {}
    for k in range(1, int(nc["n"].max()) + 1):
        rows = nc[nc["n"] >= k]
        value = [1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k) for n, c in zip(rows["n"], rows["c"], strict=True)]
        pass_at_k[k] = float(np.dot(value, rows["pairs"]) / rows["pairs"].sum())
    per_label = counts.groupby("gold").agg(pairs=("n", "size"), samples=("n", "sum"), right=("c", "sum"))
    confusion = pol.assign(p=pol["predicted"].fillna("(unparsed)")).groupby(["label", "p"]).size()
    stats_s = time.perf_counter() - t

    t = time.perf_counter()
    n, c = counts["n"], counts["c"]
    counts["difficulty"] = np.select([c == 0, c >= n, c <= gamma * n], ["unsolved", "easy", "hard"], "medium")
    diff_s = time.perf_counter() - t

    t = time.perf_counter()
    pol = pol.assign(good=pol["right"] & (pol["parse_status"] == "ok") & pol["consistent"],
                     wrong=~pol["right"], draw=pd.util.hash_pandas_object(pol["sample_id"], index=False, hash_key="0" * 16).values,
                     text_hash=pd.util.hash_pandas_object(pol["text"], index=False).values)
    pool = pol[pol["good"] | pol["wrong"]].sort_values("draw")
    pool = pool.drop_duplicates(["pair_id", "good", "text_hash"])
    pool["r"] = pool.groupby(["pair_id", "good"]).cumcount()
    sides = pool.groupby("pair_id").agg(n_good=("good", "sum"), n_wrong=("wrong", "sum"))
    sides["n_right"] = counts["c"]
    mixed = sides[(sides["n_good"] > 0) & (sides["n_wrong"] > 0)]
    reps = np.minimum(cap, np.maximum(mixed["n_good"], mixed["n_wrong"])).astype(int)
    expanded = pd.DataFrame({"pair_id": np.repeat(mixed.index.values, reps)})
    expanded["i"] = expanded.groupby("pair_id").cumcount()
    expanded = expanded.join(mixed, on="pair_id")
    expanded["rc"], expanded["rw"] = expanded["i"] % expanded["n_good"], expanded["i"] % expanded["n_wrong"]
    good = pool[pool["good"]][["pair_id", "r", "sample_id", "text", "text_hash"]]
    bad = pool[~pool["good"]][["pair_id", "r", "sample_id", "text", "text_hash"]]
    dpo = expanded.merge(good, left_on=["pair_id", "rc"], right_on=["pair_id", "r"]).merge(
        bad, left_on=["pair_id", "rw"], right_on=["pair_id", "r"], suffixes=("_chosen", "_rejected"))
    dpo = dpo[dpo["text_hash_chosen"] != dpo["text_hash_rejected"]]
    teacher = s[(s["run_id"] == "bench-teacher") & s["right"] & (s["parse_status"] == "ok") & s["consistent"]]
    rescue = sides[(sides["n_good"] == 0) & (sides["n_wrong"] > 0)].index
    fallback = bad[bad["pair_id"].isin(rescue) & (bad["r"] < cap)].merge(
        teacher[["pair_id", "sample_id"]].drop_duplicates("pair_id"), on="pair_id", suffixes=("_rejected", "_chosen"))
    dpo_s = time.perf_counter() - t

    t = time.perf_counter()
    kept = counts[(c > 0) & (c < gamma * n - 1e-9)].copy()
    kept["draw"] = pd.util.hash_pandas_object(kept.index.to_series(), index=False).values
    per = kept.groupby("gold").size()
    kept = kept.sort_values("draw")
    grpo = kept[kept.groupby("gold").cumcount() < per.min()]
    cv = (per.std(ddof=0) / per.mean(), grpo.groupby("gold").size().std(ddof=0) / grpo.groupby("gold").size().mean())
    grpo_s = time.perf_counter() - t
    return {"pairs": int(len(pairs)), "samples": int(len(pol)), "load_seconds": load,
            "times": {"statistics": stats_s, "difficulty": diff_s, "dpo selection": dpo_s, "grpo selection": grpo_s},
            "compute_seconds": stats_s + diff_s + dpo_s + grpo_s, "cpu": cpu_seconds() - cpu0,
            "peak_rss_mb": peak_rss_mb(),
            "pass_at_k": pass_at_k, "dpo_rows": int(len(dpo) + len(fallback)), "grpo_rows": int(len(grpo)),
            "cv": cv, "labels": int(len(per_label)), "confusion_cells": int(len(confusion))}


def prompt_cost(pairs: int = 300) -> dict:
    """What the policy prompt of cotgen.prompting costs per pair (the export renders one per exported pair)."""
    from cotgen.app.export import policy_prompt_renderer
    from schemas.pair import Pair
    from schemas.workspace import Workspace

    ws = Workspace.open(ARGS.dir)
    render = policy_prompt_renderer(ws, "label_first")
    items = [Pair(pair_id=str(i), source="b", query=f"red shoes {i}", title=f"Product {i}", label="L4", scheme="taosr4")
             for i in range(pairs)]
    t = time.perf_counter()
    for p in items:
        render(p)
    jinja = (time.perf_counter() - t) / pairs
    t = time.perf_counter()
    for p in items:
        bench_prompt(p)
    plain = (time.perf_counter() - t) / pairs
    return {"cotgen_prompting_us": jinja * 1e6, "bench_prompt_us": plain * 1e6}


def run_child(mode: str, *extra: str) -> dict:
    """One measured part in a fresh interpreter: its own timings and peak RSS."""
    args = ["--dir", str(ARGS.dir), "--pairs", str(ARGS.pairs), "--n", str(ARGS.n), "--child", mode, *extra]
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{mode} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(gen: dict | None, duck: dict, pandas_run: dict, prompts: dict, full_pairs: int) -> None:
    if gen:
        print(f"generated store: {gen['policy_samples']:,} policy samples in {gen['seconds']:.0f} s, "
              f"{gen['store_mb']:,.0f} MB")
    print(f"\nDuckDB path ({duck['pairs']:,} pairs, {duck['samples']:,} policy samples; machine load average "
          f"{duck['load'][0]:.1f} before, {duck['load'][1]:.1f} after, on {os.cpu_count()} cores)")
    print(f"  {'':40s} {'wall':>9s} {'CPU':>9s}")
    for name, (secs, cpu) in duck["times"].items():
        print(f"  {name:40s} {secs:7.2f} s {cpu:7.2f} s")
        if name.startswith("export"):
            for phase, phase_secs, phase_cpu in duck["export_phases"]:
                print(f"    {phase:38s} {phase_secs:7.2f} s {phase_cpu:7.2f} s")
    ok = "OK" if duck["total"] < 60 and duck["peak_rss_mb"] < 4096 else "MISSED"
    print(f"  {'total (wall)':40s} {duck['total']:7.2f} s   CPU {duck['cpu']:.1f} s   peak RSS {duck['peak_rss_mb']:,.0f} MB"
          f"   (target < 60 s, < 4096 MB: {ok})")
    print("  pass@k: " + "  ".join(f"@{k} {v:.1%}" for k, v in duck["pass_at_k"].items()))
    print(f"  difficulty: {duck['difficulty']}")
    print(f"  dpo cases: {duck['dpo']}; grpo: {duck['grpo']}")
    print(f"  rows written: {duck['counts']}; dataset {duck['dataset_mb']:,.0f} MB")
    scale = full_pairs / pandas_run["pairs"]
    projected, projected_cpu = pandas_run["compute_seconds"] * scale, pandas_run["cpu"] * scale
    same = [p for p in duck["export_phases"] if p[0] in ("open", "selecting dpo", "selecting grpo")]
    duck_same = duck["times"]["curate: statistics + difficulty"][0] + sum(p[1] for p in same)
    duck_same_cpu = duck["times"]["curate: statistics + difficulty"][1] + sum(p[2] for p in same)
    print(f"\npandas ({pandas_run['pairs']:,} pairs, {pandas_run['samples']:,} policy samples; load from DuckDB "
          f"{pandas_run['load_seconds']:.1f} s not counted)")
    for name, secs in pandas_run["times"].items():
        print(f"  {name:40s} {secs:7.2f} s")
    print(f"  compute {pandas_run['compute_seconds']:.2f} s (CPU {pandas_run['cpu']:.1f} s), peak RSS "
          f"{pandas_run['peak_rss_mb']:,.0f} MB; x{scale:g} to full size: {projected:.1f} s (CPU {projected_cpu:.1f} s)")
    print("  pandas pass@k on its subset: " + "  ".join(f"@{k} {v:.1%}" for k, v in pandas_run["pass_at_k"].items()))
    print(f"\nsame work (statistics + difficulty + DPO/GRPO selection): DuckDB {duck_same:.1f} s (CPU "
          f"{duck_same_cpu:.1f} s) vs pandas {projected:.1f} s (CPU {projected_cpu:.1f} s, projected) -> "
          f"pandas / DuckDB = {projected / duck_same:.1f}x wall, {projected_cpu / duck_same_cpu:.1f}x CPU")
    print(f"\npolicy prompt per pair: cotgen.prompting {prompts['cotgen_prompting_us']:,.0f} us, bench renderer "
          f"{prompts['bench_prompt_us']:.1f} us -> {full_pairs:,} pairs with cotgen.prompting: "
          f"{prompts['cotgen_prompting_us'] * full_pairs / 1e6:,.0f} s")


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cotgen-bench-curate"))
    parser.add_argument("--pandas-pairs", type=int, default=250_000)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--child", nargs="+")
    ARGS = parser.parse_args()
    if ARGS.child:
        mode, *rest = ARGS.child
        result = {"generate": lambda: generate(ARGS.dir, ARGS.pairs, ARGS.n),
                  "duckdb": lambda: run_duckdb(ARGS.dir),
                  "pandas": lambda: run_pandas(ARGS.dir, int(rest[0])),
                  "prompts": prompt_cost}[mode]()
        print(json.dumps(result, default=str))
        return
    done = ARGS.dir / DONE
    fresh = ARGS.regenerate or not done.exists() or json.loads(done.read_text())["pairs"] != ARGS.pairs
    gen = run_child("generate") if fresh else None
    runs = {"duckdb": run_child("duckdb"), "pandas": run_child("pandas", str(ARGS.pandas_pairs)),
            "prompts": run_child("prompts")}
    report(gen, runs["duckdb"], runs["pandas"], runs["prompts"], ARGS.pairs)


ARGS: argparse.Namespace
if __name__ == "__main__":
    main()
