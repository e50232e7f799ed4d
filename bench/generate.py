"""Generation client benchmark: how close the OpenAI-compatible backend gets to a server's ideal throughput.

1. A loopback OpenAI-compatible server (its own process, so its CPU is not the client's) answers every
   request after a fixed latency with no concurrency limit. N requests at concurrency C: the ideal is
   C / latency requests per second. Printed: achieved req/s, ratio to ideal, client CPU ms per request,
   for cotgen's backend and, for reference, a plain AsyncOpenAI + semaphore loop.
2. Tokens per second of SmolLM2 behind `transformers serve` (openai backend) and in-process
   (transformers backend, batched, shared-prefix cache), on the same short policy prompts.

    python bench/generate.py                       # both parts
    python bench/generate.py --skip-models         # part 1 only
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers_generation import fake_server, transformers_server  # noqa: E402

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
    a = ap.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}")
    if not a.skip_client:
        client_bench(a.requests, a.concurrency, a.latency, a.repeats)
    if not a.skip_models:
        model_bench(a.model_requests, a.model_max_tokens, a.threads)


if __name__ == "__main__":
    main()
