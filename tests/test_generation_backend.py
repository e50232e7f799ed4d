"""The OpenAI-compatible backend against loopback servers: n, fallbacks, retries, faults, several endpoints."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from helpers_generation import fake_server

from cotgen.backends.base import Job, Outcome, SamplingParams
from cotgen.backends.openai import OpenAIBackend, OpenAIOptions
from schemas.errors import CotgenError


def _jobs(k: int, n: int, **params) -> list[Job]:
    p = SamplingParams(max_tokens=8, **params)
    return [Job(pair_id=f"p{i}", messages=({"role": "user", "content": f"query {i}\nitem {i}"},), params=p,
                samples=tuple((s, f"k{i}-{s}") for s in range(n))) for i in range(k)]


def _run(urls: list[str], jobs: list[Job], **options) -> tuple[OpenAIBackend, list[Outcome]]:
    backend = OpenAIBackend("fake", OpenAIOptions(base_urls=urls, **{"timeout_s": 5.0, "retry_base_s": 0.02, **options}))
    out: list[Outcome] = []
    backend.run(iter(jobs), out.append, threading.Event())
    return backend, out


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_n_in_one_request_where_honoured(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with fake_server(log_path=log) as url:
        backend, out = _run([url], _jobs(3, 3))
    assert sorted((o.job.pair_id, o.sample_index) for o in out) == [(f"p{i}", s) for i in range(3) for s in range(3)]
    assert all(o.ok and "Label:" in o.text for o in out)
    assert len(_log(log)) == 3 and backend.n_supported is True
    assert sorted(r["keys"] for r in _log(log)) == [",".join(f"k{i}-{s}" for s in range(3)) for i in range(3)]
    assert sum(o.tokens_in for o in out) > 0 and all(o.tokens_out > 0 for o in out)


def test_one_request_per_sample_when_n_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with fake_server(log_path=log, honour_n=False) as url:
        backend, out = _run([url], _jobs(4, 2), concurrency=1)
    assert len(out) == 8 and all(o.ok for o in out)
    assert len({o.key for o in out}) == 8
    assert backend.n_supported is False
    assert len(_log(log)) == 8, "each request answered one sample"


def test_retries_each_fault_and_accounts_for_it(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with fake_server(log_path=log, faults="429x2,500,hang,truncated", retry_after="0.2") as url:
        backend, out = _run([url], _jobs(6, 1), concurrency=2, timeout_s=1.0)
    assert len(out) == 6 and all(o.ok for o in out)
    assert dict(backend.stats.retries) == {"429": 2, "500": 1, "timeout": 1, "bad_json": 1}
    assert not backend.stats.failures
    assert max(o.attempts for o in out) >= 2
    assert len(_log(log)) == 6 + 5


def test_gives_up_after_max_retries_and_never_retries_a_400(tmp_path: Path) -> None:
    with fake_server(faults="500,400") as url:
        backend, out = _run([url], _jobs(3, 1), concurrency=1, max_retries=0)
    failed = [o for o in out if not o.ok]
    assert len(out) == 3 and len(failed) == 2
    assert sorted(o.error.split(":")[0] for o in failed) == ["500", "http_400"]
    assert "bad request" in next(o.error for o in failed if o.error.startswith("http_400"))
    assert dict(backend.stats.failures) == {"500": 1, "http_400": 1}


def test_429_lowers_the_endpoint_limit(tmp_path: Path) -> None:
    with fake_server(faults="429x4", retry_after="0") as url:
        backend, out = _run([url], _jobs(8, 1), concurrency=8)
    assert all(o.ok for o in out)
    assert backend.pool.limits[0].limit < 8


def test_several_base_urls_share_the_load(tmp_path: Path) -> None:
    logs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    with fake_server(latency_s=0.05, log_path=logs[0]) as a, fake_server(latency_s=0.05, log_path=logs[1]) as b:
        _, out = _run([a, b], _jobs(40, 1), concurrency=4)
    assert len(out) == 40 and all(o.ok for o in out)
    counts = [len(_log(p)) for p in logs]
    assert sum(counts) == 40 and min(counts) >= 10


def test_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(CotgenError, match="cannot reach http://127.0.0.1:9/v1"):
        _run(["http://127.0.0.1:9/v1"], _jobs(1, 1))


def test_stop_admits_no_new_jobs(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    stop = threading.Event()
    out: list[Outcome] = []

    def emit(o: Outcome) -> None:
        out.append(o)
        stop.set()

    with fake_server(log_path=log, latency_s=0.05) as url:
        backend = OpenAIBackend("fake", OpenAIOptions(base_urls=[url], concurrency=1))
        backend.run(iter(_jobs(20, 1)), emit, stop)
    assert 1 <= len(out) <= 2 and len(_log(log)) == len(out)


def test_structured_answers_and_label_probabilities_from_top_logprobs() -> None:
    from cotgen.generation import Parser
    from cotgen.structured import answer_schema
    from schemas.labels import BUILTIN_SCHEMES
    from schemas.pair import Pair

    scheme = BUILTIN_SCHEMES["crowdflower"]
    pair = Pair(pair_id="p0", source="s", query="q", title="t", label="L3", scheme="crowdflower")
    with fake_server() as url:
        _, structured = _run([url], _jobs(2, 2, json_schema=answer_schema(scheme, "label_first")))
        _, ranked = _run([url], _jobs(2, 2, top_logprobs=5))
    parser = Parser(run_id="r", scheme_for=lambda _: scheme, structured=True)
    for o in structured:
        sample = parser.sample(o, pair)
        assert next(iter(json.loads(o.text))) == "label", "label_first: the label comes first"
        assert (sample.parse_status, len(sample.steps), sample.consistent) == ("ok", 5, True)
    plain = Parser(run_id="r", scheme_for=lambda _: scheme)
    for o in ranked:
        sample = plain.sample(o, pair)
        assert o.logprobs and sample.label_probs is not None
        assert max(sample.label_probs, key=sample.label_probs.get) == sample.predicted_label
        assert sum(sample.label_probs.values()) == pytest.approx(1.0)
