"""OpenAI-compatible chat completions (vLLM, SGLang, OpenAI, `transformers serve`) with bounded, adaptive concurrency.

The hot path speaks the chat-completions wire format itself instead of going through the SDK's
request and response models, which cost 2-4 ms of CPU per request and cap one client well below what a
fleet of servers answers. Plain http:// endpoints use the lean keep-alive client in http1.py; https://
and proxied ones use httpx2 (the HTTP library AsyncOpenAI runs on). Each endpoint is checked once at start-up
(GET /models), so a wrong URL or key fails with one clear message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx2

from cotgen.backends.base import Backend, Emit, Job, Outcome, TokenAlternatives
from cotgen.backends.http1 import Http1Endpoint, HttpResponse, TransportFailure
from cotgen.backends.limits import AdaptiveLimit, SlotPool, backoff_s, retry_after_s
from schemas.errors import CotgenError

CONNECTIONS_PER_CLIENT = 8  # httpcore scans its whole pool per request: many small pools beat one big one
LOGPROB_POSITIONS = 48  # enough to pass "Label: <grade>" in a label_first answer
KEYS_HEADER = "x-cotgen-request-keys"


@dataclass
class OpenAIOptions:
    base_urls: list[str]
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 6
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    n_per_request: bool | None = None  # None: try `n`, fall back to one request per sample if ignored
    check_models: bool = True
    max_response_bytes: int = 4 << 20  # a bigger body is an "oversize" failure, retried like one


class RequestFailed(Exception):
    """A request that failed for good: not retryable, or out of retries."""

    def __init__(self, kind: str, message: str, attempts: int):
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts


class Endpoint(Protocol):
    url: str

    async def post(self, content: bytes, headers: Mapping[str, str]) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class HttpxEndpoint:
    """httpx2 for https:// and proxied endpoints, as several small pools (httpcore scans its pool per request)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float, concurrency: int, max_bytes: int):
        self.url = url
        self.max_bytes = max_bytes
        limits = httpx2.Limits(max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT,
                               keepalive_expiry=30)
        timeout = httpx2.Timeout(timeout_s, pool=None)
        self.clients = [httpx2.AsyncClient(limits=limits, timeout=timeout, headers=dict(headers))
                        for _ in range(-(-concurrency // CONNECTIONS_PER_CLIENT))]
        self.rotation = itertools.cycle(self.clients)
        self.timeout_s = timeout_s

    async def post(self, content: bytes, headers: Mapping[str, str]) -> HttpResponse:
        try:
            async with next(self.rotation).stream("POST", self.url, content=content, headers=dict(headers)) as r:
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise TransportFailure("oversize", f"response body over {self.max_bytes:,} bytes")
        except httpx2.TimeoutException:
            raise TransportFailure("timeout", f"no answer within {self.timeout_s:g}s") from None
        except httpx2.TransportError as e:
            raise TransportFailure("connection", f"{type(e).__name__}: {e}") from None
        return HttpResponse(r.status_code, r.headers, bytes(body))

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))


def make_endpoint(base_url: str, headers: Mapping[str, str], timeout_s: float, concurrency: int,
                  max_bytes: int) -> Endpoint:
    url = base_url.rstrip("/") + "/chat/completions"
    parts = urlsplit(url)
    proxied = parts.hostname is not None and bool(urllib.request.getproxies().get(parts.scheme)) \
        and not urllib.request.proxy_bypass(parts.hostname)
    if parts.scheme == "http" and not proxied:
        return Http1Endpoint(url, headers, timeout_s, max_bytes)
    return HttpxEndpoint(url, headers, timeout_s, concurrency, max_bytes)


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str, options: OpenAIOptions):
        super().__init__(model)
        if not options.base_urls:
            raise CotgenError("backend openai: no base URL; set base_urls in [teacher]/[policy] or pass --base-url")
        self.options = options
        self.api_key = os.environ.get(options.api_key_env, "") or "EMPTY"
        self.n_supported = options.n_per_request
        self.logprobs_supported: bool | None = None

    # ---- sync entry point: the event loop lives in the caller's worker thread
    def run(self, jobs: Iterator[Job], emit: Emit, stop: threading.Event) -> None:
        asyncio.run(self._run(jobs, emit, stop))

    async def _run(self, jobs: Iterator[Job], emit: Emit, stop: threading.Event) -> None:
        if self.options.check_models:
            await self._check()
        headers = {"authorization": f"Bearer {self.api_key}", "content-type": "application/json"}
        self.endpoints = [make_endpoint(url, headers, self.options.timeout_s, self.options.concurrency,
                                        self.options.max_response_bytes) for url in self.options.base_urls]
        self.pool = SlotPool([AdaptiveLimit(self.options.concurrency) for _ in self.endpoints])
        try:
            admission = asyncio.Semaphore(self.options.concurrency * len(self.endpoints))
            tasks: set[asyncio.Task] = set()
            feed = _Feed(jobs, stop)
            while True:
                await admission.acquire()
                job = None if stop.is_set() else await feed.next()
                if job is None:
                    admission.release()
                    break
                task = asyncio.create_task(self._job(job, emit))
                tasks.add(task)
                task.add_done_callback(lambda t: (tasks.discard(t), admission.release()))
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            feed.close()
            await asyncio.gather(*(ep.aclose() for ep in self.endpoints))

    async def _check(self) -> None:
        """Fail fast with one line when an endpoint is unreachable or refuses the key (GET /models)."""
        headers = {"authorization": f"Bearer {self.api_key}"}
        async with httpx2.AsyncClient(timeout=min(self.options.timeout_s, 30.0), headers=headers) as client:
            for url in self.options.base_urls:
                try:
                    r = await client.get(url.rstrip("/") + "/models")
                except httpx2.TransportError as e:
                    raise CotgenError(f"backend openai: cannot reach {url}: {type(e).__name__}: {e}") from None
                if r.status_code in (401, 403):
                    raise CotgenError(f"backend openai: {url} refused the API key from ${self.options.api_key_env} "
                                      f"(HTTP {r.status_code})")
                # Any other answer means the server is there (`transformers serve` answers /models with a 500).

    # ---- one job: all its samples, in one request with `n` where the server honours it
    async def _job(self, job: Job, emit: Emit) -> None:
        pending = list(job.samples)
        while pending:
            batch = pending if self.n_supported is not False else pending[:1]
            pending = pending[len(batch):]
            try:
                choices, usage, latency, attempts = await self._complete(job, batch)
            except RequestFailed as e:
                self._fail(job, batch, e.kind, str(e), e.attempts, emit)
                continue
            if not choices:
                self._fail(job, batch, "bad_response", "bad_response: no choices", attempts, emit)
                continue
            if len(batch) > 1:
                self.n_supported = len(choices) >= len(batch)  # a server that ignores `n` answers once
            self._emit_choices(job, batch[: len(choices)], choices, usage, latency, attempts, emit)
            pending = batch[len(choices):] + pending

    def _fail(self, job: Job, batch: list[tuple[int, str]], kind: str, error: str, attempts: int, emit: Emit) -> None:
        self.stats.count_failure(kind)
        for index, key in batch:
            emit(Outcome(job=job, sample_index=index, key=key, error=error, attempts=attempts))

    def _body(self, job: Job, batch: list[tuple[int, str]]) -> dict[str, Any]:
        p = job.params
        body: dict[str, Any] = {"model": self.model, "messages": job.messages, "max_tokens": p.max_tokens,
                                "temperature": p.temperature, "top_p": p.top_p}
        if len(batch) > 1:
            body["n"] = len(batch)
        seed = p.sample_seed(batch[0][0])
        if seed is not None:
            body["seed"] = seed
        if p.top_logprobs and self.logprobs_supported is not False:
            body["logprobs"] = True
            body["top_logprobs"] = p.top_logprobs
        if p.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "relevance_answer", "schema": p.json_schema, "strict": True}}
        return {**body, **(p.extra or {})}

    async def _complete(self, job: Job, batch: list[tuple[int, str]]) -> tuple[list[dict], dict, float, int]:
        """POST with retries; returns (choices, usage, latency_s, attempts) or raises RequestFailed."""
        headers = {KEYS_HEADER: ",".join(k for _, k in batch)}
        body = self._body(job, batch)
        content = json.dumps(body).encode()
        attempt = 0
        while True:
            slot = await self.pool.acquire()
            started = time.perf_counter()
            wait: float | None = None
            success = False
            try:
                response = await self.endpoints[slot].post(content, headers)
                status = response.status
                if status == 200:
                    data = json.loads(response.content)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    success = True
                    return data.get("choices") or [], data.get("usage") or {}, time.perf_counter() - started, attempt + 1
                if status == 400 and "logprobs" in body and self.logprobs_supported is None:
                    self.logprobs_supported = False  # the server refuses logprobs: ask again without them
                    body = self._body(job, batch)
                    content = json.dumps(body).encode()
                    continue
                if status != 429 and status < 500:
                    raise RequestFailed(f"http_{status}", f"http_{status}: {_error_text(response)}", attempt + 1)
                kind, detail = str(status), _error_text(response)
                wait = retry_after_s(response.headers)
                if status == 429:
                    self.pool.limits[slot].on_overload(time.monotonic(), max(self.options.retry_base_s, wait or 0.0))
            except TransportFailure as e:
                kind, detail = e.kind, str(e)
            except ValueError as e:
                kind, detail = "bad_json", f"unreadable response body: {e}"  # truncated JSON, a proxy's error page
            finally:
                self.pool.release(slot, success=success)
            if attempt >= self.options.max_retries:
                raise RequestFailed(kind, f"{kind}: {detail} (gave up after {attempt + 1} attempts)", attempt + 1)
            self.stats.count_retry(kind)
            await asyncio.sleep(backoff_s(attempt, self.options.retry_base_s, self.options.retry_max_s, wait))
            attempt += 1

    def _emit_choices(self, job: Job, done: list[tuple[int, str]], choices: list[dict], usage: dict,
                      latency: float, attempts: int, emit: Emit) -> None:
        self.stats.count_request()
        if self.logprobs_supported is None and job.params.top_logprobs and choices:
            self.logprobs_supported = bool(choices[0].get("logprobs"))
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        reasoning_tokens = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        share, extra = divmod(completion_tokens, max(1, len(done)))
        thought, spare = divmod(reasoning_tokens, max(1, len(done)))
        for i, ((index, key), choice) in enumerate(zip(done, choices, strict=False)):
            message = choice.get("message") or {}
            emit(Outcome(
                job=job, sample_index=index, key=key, text=message.get("content") or "",
                finish_reason=choice.get("finish_reason"),
                # A request's prompt is billed once, so it is counted on its first sample only.
                tokens_in=prompt_tokens if i == 0 else 0, tokens_out=share + (extra if i == 0 else 0),
                logprobs=_token_alternatives(choice.get("logprobs")), latency_s=latency, attempts=attempts,
                # vLLM and SGLang reasoning parsers return the thinking apart (newer servers name it `reasoning`).
                reasoning=message.get("reasoning_content") or message.get("reasoning") or None,
                tokens_reasoning=thought + (spare if i == 0 else 0),
            ))


class _Feed:
    """Jobs pulled in a helper thread: a producer still retrieving rules must not stall the requests in flight.

    One job waits at a time (`space`); each is handed to the loop exactly once (`call_soon_threadsafe`).
    """

    def __init__(self, jobs: Iterator[Job], stop: threading.Event):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self.space = threading.Semaphore(1)
        self.stop = stop
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._pull, args=(jobs,), name="cotgen-jobs", daemon=True)
        self.thread.start()

    def _pull(self, jobs: Iterator[Job]) -> None:
        try:
            for job in jobs:
                if not self._put(job):
                    return
        except BaseException as e:  # noqa: BLE001 - raised in the event loop by `next`
            self.error = e
        finally:
            self._put(None)

    def _put(self, item: Job | None) -> bool:
        while not self.closed.is_set():
            if self.space.acquire(timeout=0.2):
                try:
                    self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
                except RuntimeError:  # the loop has closed
                    return False
                return True
        return False

    async def next(self) -> Job | None:
        job = await self.queue.get()
        self.space.release()
        if job is None and self.error is not None:
            raise self.error
        return job

    def close(self) -> None:
        self.closed.set()


def _token_alternatives(logprobs: dict | None) -> list[TokenAlternatives] | None:
    content = (logprobs or {}).get("content")
    if not content:
        return None
    return [
        TokenAlternatives(token=t.get("token", ""),
                          top=tuple((a.get("token", ""), float(a.get("logprob", 0.0))) for a in t.get("top_logprobs") or ()))
        for t in content[:LOGPROB_POSITIONS]
    ]


def _error_text(response: HttpResponse) -> str:
    try:
        err = json.loads(response.content).get("error")
        message = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        message = None
    return str(message or response.content[:200].decode("utf-8", "replace") or f"HTTP {response.status}")
