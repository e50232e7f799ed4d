"""Generation client benchmark: how close the OpenAI-compatible backend gets to a server's ideal throughput.

1. A loopback OpenAI-compatible server (its own process, so its CPU is not the client's) answers every
   request after a fixed latency with no concurrency limit. N requests at concurrency C: the ideal is
   C / latency requests per second. Printed: achieved req/s, ratio to ideal, client CPU ms per request,
   for cotgen's backend and, for reference, a plain AsyncOpenAI + semaphore loop.
2. Tokens per second of SmolLM2 behind `transformers serve` (openai backend) and in-process
   (transformers backend, batched, shared-prefix cache), on the same short policy prompts.
3. Streaming runs (`cotgen generate`) over `--run-pairs` generated pairs (CrowdFlower rows, each query
   made unique) against a 0 ms loopback server: a teacher run (retrieval included, `--teacher-pairs` of
   them) and a policy run: seconds from process start to the first request, peak RSS of the cotgen
   process, samples/s; end to end on a 200 ms server at concurrency 64 (ratio to ideal); then the
   kill/resume accounting: a run SIGKILLed twice mid-way and re-run, requests received vs samples stored.

    python bench/generate.py                       # parts 1 and 2
    python bench/generate.py --skip-models         # part 1 only
    python bench/generate.py --skip-client --skip-models --run-pairs 100000   # part 3 only
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers_generation import CROWDFLOWER_MAP, configure, fake_server, transformers_server  # noqa: E402

from cotgen.backends.base import Job, Outcome, SamplingParams  # noqa: E402
from cotgen.backends.openai import OpenAIBackend, OpenAIOptions  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def jobs(count: int, max_tokens: int = 16, messages: list[list[dict]] | None = None) -> list[Job]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.7)
    return [Job(pair_id=f"p{i}", params=params, samples=((0, f"{i:032x}"),),
                messages=tuple(messages[i % len(messages)]) if messages else ({"role": "user", "content": f"query {i}"},))
            for i in range(count)]


def cotgen_client(url: str, requests: int, concurrency: int) -> tuple[float, float, int]:
    """(wall s, client CPU s, outcomes ok) for the backend's own run loop."""
    backend = OpenAIBackend("bench", OpenAIOptions(base_urls=[url], concurrency=concurrency, check_models=False))
    out: list[Outcome] = []
    c0, t0 = cpu_s(), time.perf_counter()
    backend.run(iter(jobs(requests)), out.append, threading.Event())
    return time.perf_counter() - t0, cpu_s() - c0, sum(o.ok for o in out)


def plain_client(url: str, requests: int, concurrency: int) -> tuple[float, float, int]:
    """The reference: AsyncOpenAI, one client, a semaphore."""
    from openai import AsyncOpenAI

    async def main() -> tuple[float, float, int]:
        client = AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> bool:
            async with gate:
                r = await client.chat.completions.create(model="bench", messages=[{"role": "user", "content": f"query {i}"}],
                                                         max_tokens=16, temperature=0.7, seed=0)
                return bool(r.choices[0].message.content)

        c0, t0 = cpu_s(), time.perf_counter()
        ok = sum(await asyncio.gather(*(one(i) for i in range(requests))))
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        await client.close()
        return wall, cpu, ok

    return asyncio.run(main())


def client_bench(requests: int, concurrency: int, latency: float, repeats: int) -> None:
    ideal = concurrency / latency
    print(f"## client: {requests} requests, concurrency {concurrency}, server latency {latency * 1000:.0f} ms "
          f"(ideal {ideal:.0f} req/s)")
    with fake_server(latency_s=latency) as url:
        cotgen_client(url, concurrency * 2, concurrency)  # warm: connections, imports
        for name, fn in (("cotgen openai backend", cotgen_client), ("plain AsyncOpenAI + semaphore", plain_client)):
            ratios = []
            for _ in range(repeats):
                wall, cpu, ok = fn(url, requests, concurrency)
                assert ok == requests, f"{name}: {requests - ok} requests failed"
                ratios.append(requests / wall / ideal)
                print(f"{name:32s} {requests / wall:7.1f} req/s  ratio {requests / wall / ideal:.3f}  "
                      f"client CPU {cpu / requests * 1000:.2f} ms/request")
            print(f"{name:32s} median ratio {statistics.median(ratios):.3f}  best {max(ratios):.3f}")


def policy_messages(count: int) -> list[list[dict]]:
    """Policy prompts for real CrowdFlower rows (the first `count`)."""
    import csv

    from cotgen.prompting import load_prompt
    from schemas.labels import BUILTIN_SCHEMES
    from schemas.pair import Pair

    prompt = load_prompt("policy")
    with open(ROOT.parent / "shared" / "data" / "crowdflower" / "train_dev.csv", newline="", encoding="utf-8") as f:
        rows = [r for _, r in zip(range(count), csv.DictReader(f), strict=False)]
    return [prompt.render(Pair(pair_id=str(i), source="cf", query=r["query"], title=r["product_title"], label="L4",
                               scheme="crowdflower"), BUILTIN_SCHEMES["crowdflower"], "label_first") for i, r in enumerate(rows)]


def model_bench(requests: int, max_tokens: int, threads: int) -> None:
    from schemas.models import resolve_model

    path = resolve_model("bundled:smollm2-135m-instruct")
    messages = policy_messages(requests)
    print(f"## SmolLM2-135M on CPU ({threads} torch thread(s)): {requests} policy prompts, max_tokens {max_tokens}")
    with tempfile.TemporaryDirectory() as tmp, transformers_server(path, Path(tmp) / "serve.log", threads=threads) as url:
        backend = OpenAIBackend(path, OpenAIOptions(base_urls=[url], concurrency=2, timeout_s=600))
        out: list[Outcome] = []
        backend.run(iter(jobs(1, max_tokens, messages)), out.append, threading.Event())  # warm the server
        out.clear()
        t0 = time.perf_counter()
        backend.run(iter(jobs(requests, max_tokens, messages)), out.append, threading.Event())
        wall = time.perf_counter() - t0
    tokens = sum(o.tokens_out for o in out)
    print(f"transformers serve (openai backend)  {tokens / wall:7.1f} tokens/s  ({tokens} tokens in {wall:.1f} s, "
          f"{requests / wall:.2f} req/s)")

    from cotgen.backends.transformers import TransformersBackend

    local = TransformersBackend("bundled:smollm2-135m-instruct", path, batch_size=8, threads=threads)
    out = []
    t0 = time.perf_counter()
    local.run(iter(jobs(requests, max_tokens, messages)), out.append, threading.Event())
    wall = time.perf_counter() - t0
    tokens = sum(o.tokens_out for o in out)
    print(f"transformers backend (batch 8)       {tokens / wall:7.1f} tokens/s  ({tokens} tokens in {wall:.1f} s)")


COTGEN = [sys.executable, "-m", "cotgen.cli"]
EMBEDDER_LOAD = ("import time; t = time.perf_counter(); from retrieval.embedder import Embedder; Embedder().encode(['x']); "
                 "print(time.perf_counter() - t)")


def cli(*args: str) -> str:
    return subprocess.run([*COTGEN, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def run_workspace(base: Path, pairs: int) -> Path:
    """A workspace with `pairs` CrowdFlower-based pairs (queries made unique) ingested and the rule index built."""
    ws = base / "ws"
    cli("init", str(ws))
    source = base / "pairs.csv"
    with open(ROOT.parent / "shared" / "data" / "crowdflower" / "train_dev.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(source, "w", newline="", encoding="utf-8") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        for i in range(pairs):
            row = dict(rows[i % len(rows)])
            out.writerow({**row, "id": str(i), "query": f"{row['query']} {i // len(rows)}" if i >= len(rows) else row["query"]})
    cli("ingest", str(source), "-w", str(ws), "--source", "bench", "--scheme", "crowdflower", "--map", CROWDFLOWER_MAP,
        "--strip-html")
    cli("index", "build", "-w", str(ws))
    configure(ws, "teacher", backend="openai", model="fake", n=1, concurrency=64, structured=False, explain_gold=False,
              timeout_s=30.0)
    return ws


def watch(proc: subprocess.Popen) -> int:
    """Peak resident memory (bytes) of a running process, read from /proc until it exits."""
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM")))
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    return peak


def received(log: Path) -> list[tuple[str, float]]:
    if not log.exists():
        return []
    return [(k, e["t"]) for e in map(json.loads, log.read_text().splitlines()) for k in e["keys"].split(",") if k]


def timed_run(ws: Path, log: Path, latency: float, *args: str) -> tuple[float, int, dict]:
    """`cotgen generate ARGS` against a fresh loopback server: (seconds to its first request, peak RSS, summary)."""
    with fake_server(log_path=log, latency_s=latency) as url:
        started = time.time()
        proc = subprocess.Popen([*COTGEN, "generate", "-w", str(ws), "--json", *args, "--base-url", url], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = watch(proc)
        summary = json.loads(proc.stdout.read() if proc.stdout else "{}")
    return min(t for _, t in received(log)) - started, peak, summary


def run_bench(pairs: int, teacher_pairs: int) -> None:
    print(f"## streaming runs over {pairs:,} generated pairs (0 ms loopback server unless said, concurrency 64)")
    load = subprocess.run([sys.executable, "-c", EMBEDDER_LOAD], cwd=ROOT, check=True, capture_output=True, text=True)
    print(f"embedder load, measured alone (imports included): {float(load.stdout):.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ws = run_workspace(base, pairs)
        configure(ws, "policy", backend="openai", model="fake", n=1, concurrency=64, structured=False, timeout_s=30.0)
        for role, count in (("teacher", teacher_pairs), ("policy", pairs)):
            first, peak, s = timed_run(ws, base / f"{role}.jsonl", 0.0, "--role", role, "--limit", str(count),
                                       "--run", f"bench-{role}")
            print(f"{role} ({count:,} pairs{', retrieval included' if role == 'teacher' else ''}): first request "
                  f"{first:.1f} s after process start; peak RSS {peak / 2**30:.2f} GB; {s['completed']:,} samples in "
                  f"{s['wall_s']:.0f} s = {s['samples_per_s']:.1f} samples/s")
        for e2e in sorted({min(pairs, 3000), min(pairs, 10000)}):
            configure(ws, "policy", seed=e2e)  # new request keys: the runs above answered other seeds'
            log = base / f"e2e-{e2e}.jsonl"
            _, _, s = timed_run(ws, log, 0.2, "--role", "policy", "--limit", str(e2e), "--run", f"bench-e2e-{e2e}")
            ideal, requests = 64 / 0.2, len(received(log))
            print(f"end to end, 200 ms server, concurrency 64 ({e2e:,} pairs, {requests:,} requests; the run's wall time "
                  f"includes planning): {s['samples_per_s']:.1f} samples/s = {s['samples_per_s'] / ideal:.3f} of ideal "
                  f"({ideal:.0f}/s); requests {requests / s['wall_s'] / ideal:.3f} of ideal")
        kill_resume(ws, base / "kill.jsonl", min(pairs, 4000))


def kill_resume(ws: Path, log: Path, pairs: int) -> None:
    """SIGKILL a policy run twice mid-way, re-run it: requests received vs samples stored."""
    args = [*COTGEN, "generate", "-w", str(ws), "--json", "--role", "policy", "-n", "1", "--limit", str(pairs),
            "--run", "killed", "--concurrency", "64"]
    configure(ws, "policy", backend="openai", model="fake", structured=False, timeout_s=30.0, seed=2)
    with fake_server(log_path=log, latency_s=0.05) as url:
        for _ in range(2):
            target = len(received(log)) + pairs // 4
            proc = subprocess.Popen([*args, "--base-url", url], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while len(received(log)) < target and proc.poll() is None:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        subprocess.run([*args, "--base-url", url], cwd=ROOT, check=True, capture_output=True)
    keys = [k for k, _ in received(log)]
    from curation.store import Store

    with Store(ws / "store.duckdb", read_only=True) as store:
        stored = store.scalar("SELECT count(*) FROM samples s JOIN runs r USING (run_id) WHERE r.name = 'killed'")
    print(f"kill/resume ({pairs:,} pairs, killed twice at concurrency 64): server received {len(keys):,} requests, "
          f"{stored:,} samples stored (pairs with identical prompts share a request); sent twice: "
          f"{len(keys) - len(set(keys))} (at most the 2 x 64 in flight at the kills)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model-requests", type=int, default=16)
    ap.add_argument("--model-max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (server and in-process); 1 suits a shared CPU")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-client", action="store_true")
    ap.add_argument("--run-pairs", type=int, default=0, help="part 3: streaming runs over this many generated pairs")
    ap.add_argument("--teacher-pairs", type=int, default=0, help="part 3: the teacher run's pairs (default: all)")
    a = ap.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    if not a.skip_client:
        client_bench(a.requests, a.concurrency, a.latency, a.repeats)
    if not a.skip_models:
        model_bench(a.model_requests, a.model_max_tokens, a.threads)
    if a.run_pairs:
        run_bench(a.run_pairs, a.teacher_pairs or a.run_pairs)


if __name__ == "__main__":
    main()
