"""A generation run without storage: plan keyed requests, skip the done ones, drive a backend, parse, yield samples.

Every sample request is keyed by a hash of (model, messages, sampling params, sample index); the key is
also the sample's id. The caller passes the keys already done and persists what this yields; nothing
here knows the store. Identical requests share a key, so a completion is never paid for twice: pairs
whose prompts are identical send one request, and each such pair after the first (a *follower*) gets
the answer as its own sample, under `follower_id(key, pair_id)`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from cotgen.backends.base import Backend, Job, Message, Outcome, SamplingParams, TokenAlternatives
from cotgen.labelprobs import label_distribution
from cotgen.structured import parse_structured
from schemas.answer import ParsedAnswer, parse_answer
from schemas.labels import LabelScheme
from schemas.pair import Pair
from schemas.sample import Sample


@dataclass(frozen=True)
class PairPrompt:
    """A pair, the messages rendered for it, and the rules retrieved into them."""

    pair: Pair
    messages: tuple[Message, ...]
    rule_ids: tuple[str, ...] = ()


def request_key(model: str, messages: Iterable[Message], params: SamplingParams, sample_index: int) -> str:
    """The identity of one sample request: same key, same request; a done key is never sent again."""
    return _sample_key(_prompt_digest(model, messages, params), sample_index)


def _prompt_digest(model: str, messages: Iterable[Message], params: SamplingParams) -> str:
    payload = json.dumps({"model": model, "messages": list(messages), "params": params.key_fields()},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _sample_key(digest: str, sample_index: int) -> str:
    return hashlib.sha256(f"{digest}:{sample_index}".encode()).hexdigest()[:32]


def follower_id(key: str, pair_id: str) -> str:
    """The sample id of a pair that shares request `key` with an earlier pair (identical prompt)."""
    return hashlib.sha256(f"{key}:{pair_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Follower:
    """A pair's sample answered by another pair's request (their prompts are identical)."""

    prompt: PairPrompt
    sample_index: int
    sample_id: str


@dataclass
class Plan:
    """The jobs still to send and how much of the run is already done.

    `followers[key]`: pairs that get the answer to `key` as their own sample; `reuse`: followers whose key was
    answered before (the caller turns the stored answer into their sample, no request).
    """

    jobs: list[Job]
    prompts: dict[str, PairPrompt]
    total: int
    done: int
    followers: dict[str, list[Follower]] = field(default_factory=dict)
    reuse: list[tuple[str, Follower, Job]] = field(default_factory=list)
    ready: list[Outcome] = field(default_factory=list)

    def keys(self) -> list[str]:
        """Every sample id the plan would write: request keys, and the followers' own ids."""
        return [key for job in self.jobs for _, key in job.samples] + \
            [f.sample_id for fs in self.followers.values() for f in fs]

    def probe_ids(self) -> list[str]:
        """`keys()` plus the ids each job's pair would have as a follower (its key answered for another pair)."""
        return self.keys() + [follower_id(key, job.pair_id) for job in self.jobs for _, key in job.samples]

    def skip(self, done_keys: set[str] | dict[str, str]) -> None:
        """Drop samples whose ids are done (e.g. stored since planning); a follower of a done key reuses its answer.

        Given done ids with their pair (a dict), a key done for another pair (an identical prompt answered
        earlier) makes this pair a follower of that answer instead of leaving it without a sample.
        """
        for job in self.jobs:
            if not isinstance(done_keys, dict):
                break
            for i, key in job.samples:
                if done_keys.get(key, job.pair_id) != job.pair_id:
                    self.followers.setdefault(key, []).insert(
                        0, Follower(self.prompts[job.pair_id], i, follower_id(key, job.pair_id)))
        followers: dict[str, list[Follower]] = {}
        owner = {key: job for job in self.jobs for _, key in job.samples}
        for key, fs in self.followers.items():
            rest = [f for f in fs if f.sample_id not in done_keys]
            self.done += len(fs) - len(rest)
            if rest and key in done_keys:
                self.reuse.extend((key, f, owner[key]) for f in rest)
            elif rest:
                followers[key] = rest
        self.followers = followers
        jobs = []
        for job in self.jobs:
            rest = tuple(s for s in job.samples if s[1] not in done_keys)
            owned = sum(done_keys.get(k) == job.pair_id for _, k in job.samples) if isinstance(done_keys, dict) \
                else len(job.samples) - len(rest)
            self.done += owned
            if rest:
                jobs.append(replace(job, samples=rest))
        self.jobs = jobs

    def answer_reuse(self, stored: dict[str, dict]) -> None:
        """Turn `reuse` into ready answers from the stored completions of their keys (`key -> row`)."""
        for key, follower, job in self.reuse:
            if key in stored:
                self.ready.append(reuse_outcome(key, follower, job, stored[key]))
                self.prompts.setdefault(follower.prompt.pair.pair_id, follower.prompt)
        self.reuse = []

    def bind(self, deliver: Callable[[Outcome], None]) -> None:
        """Hand over the answers that need no request (followers reusing a stored answer)."""
        for outcome in self.ready:
            deliver(outcome)

    def route(self, outcome: Outcome) -> tuple[PairPrompt, list[Follower]]:
        """The pair whose request this answers, and the followers that share it."""
        return self.prompts[outcome.job.pair_id], self.followers.get(outcome.key, [])


def reuse_outcome(key: str, follower: Follower, job: Job, stored: dict) -> Outcome:
    """A follower's answer from the stored completion of `key` (no request; its tokens were paid once)."""
    raw = json.loads(stored["logprobs"]) if isinstance(stored.get("logprobs"), str) else stored.get("logprobs")
    alternatives = [t if isinstance(t, TokenAlternatives) else TokenAlternatives(t[0], tuple((a, float(lp)) for a, lp in t[1]))
                    for t in raw] if raw else None
    return Outcome(job=replace(job, pair_id=follower.prompt.pair.pair_id, samples=((follower.sample_index, follower.sample_id),)),
                   sample_index=follower.sample_index, key=follower.sample_id, text=stored["text"],
                   finish_reason=stored.get("finish_reason"), logprobs=alternatives, latency_s=0.0, attempts=0,
                   reasoning=stored.get("reasoning"), shared_from=key)


ANSWERED_MEMORY = 4096  # answers kept for identical prompts planned after them, until the store has them


class StreamPlan:
    """Chunk plans turned into one job stream while earlier chunks are in flight; only chunks in flight are held.

    A job whose key is already in flight (an identical prompt in an earlier chunk) is not sent again: its
    pair follows that request; one answered moments ago is handed over at once.
    """

    def __init__(self, chunks: Iterator[Plan]):
        self.chunks = chunks
        self.total = 0
        self.done = 0
        self._lock = threading.Lock()
        self._prompts: dict[str, PairPrompt] = {}
        self._open: dict[str, int] = {}  # pair id -> samples not yet answered (its prompt is dropped at 0)
        self._followers: dict[str, list[Follower]] = {}
        self._inflight: dict[str, Job] = {}
        self._answered: dict[str, Outcome] = {}
        self._deliver: Callable[[Outcome], None] | None = None

    def bind(self, deliver: Callable[[Outcome], None]) -> None:
        self._deliver = deliver

    @property
    def jobs(self) -> Iterator[Job]:
        for chunk in self.chunks:
            with self._lock:
                self.total += chunk.total
                self.done += chunk.done
                ready = list(chunk.ready)
                jobs = []
                for job in chunk.jobs:
                    prompt = chunk.prompts[job.pair_id]
                    for key, follower in ((k, Follower(prompt, i, follower_id(k, job.pair_id))) for i, k in job.samples):
                        if key in self._answered:
                            ready.append(reuse_outcome(key, follower, job, vars(self._answered[key])))
                        elif key in self._inflight:
                            self._followers.setdefault(key, []).append(follower)
                    rest = tuple((i, k) for i, k in job.samples if k not in self._answered and k not in self._inflight)
                    if rest:
                        jobs.append(replace(job, samples=rest))
                        self._hold(prompt, len(rest))
                        self._inflight.update((k, job) for _, k in rest)
                for key, fs in chunk.followers.items():
                    if key in self._answered:  # its owner in this chunk got the answer above: so do they
                        answered = self._answered[key]
                        ready += [reuse_outcome(key, f, answered.job, vars(answered)) for f in fs]
                        chunk.prompts.update((f.prompt.pair.pair_id, f.prompt) for f in fs)
                    else:
                        self._followers.setdefault(key, []).extend(fs)
                for outcome in ready:
                    self._hold(chunk.prompts.get(outcome.job.pair_id) or self._prompts[outcome.job.pair_id], 1)
            for outcome in ready:
                assert self._deliver is not None
                self._deliver(outcome)
            yield from jobs

    def _hold(self, prompt: PairPrompt, samples: int) -> None:
        self._prompts[prompt.pair.pair_id] = prompt
        self._open[prompt.pair.pair_id] = self._open.get(prompt.pair.pair_id, 0) + samples

    def route(self, outcome: Outcome) -> tuple[PairPrompt, list[Follower]]:
        """The pair this answers and its followers; both are forgotten once answered (memory stays bounded)."""
        with self._lock:
            pair_id = outcome.job.pair_id
            prompt = self._prompts[pair_id]
            self._open[pair_id] -= 1
            if not self._open[pair_id]:
                del self._open[pair_id], self._prompts[pair_id]
            followers = self._followers.pop(outcome.key, [])
            if self._inflight.pop(outcome.key, None) is not None and outcome.ok:
                self._answered[outcome.key] = outcome
                if len(self._answered) > ANSWERED_MEMORY:
                    del self._answered[next(iter(self._answered))]
            return prompt, followers


class Prefetch:
    """`items` computed ahead in a thread, at most `depth` waiting: the next chunk's retrieval overlaps requests.

    `close()` sets `stop` and waits for the thread (at most the item it is computing): a thread still inside
    DuckDB or torch when the interpreter exits aborts the process.
    """

    def __init__(self, items: Iterator[Any], depth: int, stop: threading.Event):
        self.items = items
        self.stop = stop
        self.ahead: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._produce, name="cotgen-prefetch", daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.ahead.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self.items:
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - raised in the consumer's thread
            self._put(_Crash(e))
        finally:
            self._put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                item = self.ahead.get(timeout=0.2)
            except queue.Empty:
                if self.thread.is_alive() or not self.ahead.empty():
                    continue
                return  # stopped before it could say so
            if item is _DONE:
                return
            if isinstance(item, _Crash):
                raise item.error
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def plan_jobs(prompts: Iterable[PairPrompt], model: str, n: int, params_for: Callable[[Pair], SamplingParams]) -> Plan:
    """One job per distinct prompt with sample indexes 0..n-1; `Plan.skip` then drops the keys already done.

    A pair whose prompt equals an earlier pair's is a follower of that pair's job (one request for both).
    """
    jobs: list[Job] = []
    by_pair: dict[str, PairPrompt] = {}
    owners: dict[str, Job] = {}
    followers: dict[str, list[Follower]] = {}
    count = 0
    for prompt in prompts:
        count += 1
        params = params_for(prompt.pair)
        digest = _prompt_digest(model, prompt.messages, params)
        keys = [_sample_key(digest, i) for i in range(n)]
        if digest in owners:
            for i, key in enumerate(keys):
                followers.setdefault(key, []).append(Follower(prompt, i, follower_id(key, prompt.pair.pair_id)))
            continue
        by_pair[prompt.pair.pair_id] = prompt
        owners[digest] = Job(pair_id=prompt.pair.pair_id, messages=prompt.messages, params=params,
                             samples=tuple(enumerate(keys)))
        jobs.append(owners[digest])
    return Plan(jobs=jobs, prompts=by_pair, total=n * count, done=0, followers=followers)


@dataclass
class Budget:
    """Caps on one invocation: sample requests sent and tokens used. Hitting one stops admitting new work."""

    max_requests: int | None = None
    max_tokens: int | None = None
    requested: int = 0
    tokens: int = 0
    exhausted: str | None = None

    def admit(self, jobs: Iterable[Job]) -> Iterator[Job]:
        for job in jobs:
            if self.max_tokens is not None and self.tokens >= self.max_tokens:
                self.exhausted = f"token budget of {self.max_tokens:,} reached"
                return
            if self.max_requests is not None:
                room = self.max_requests - self.requested
                if room <= 0:
                    self.exhausted = f"request budget of {self.max_requests:,} reached"
                    return
                job = replace(job, samples=job.samples[:room])
            self.requested += len(job.samples)
            yield job

    def record(self, outcome: Outcome) -> None:
        self.tokens += outcome.tokens_in + outcome.tokens_out


@dataclass
class Result:
    """One outcome and, when it succeeded, the parsed sample (and the samples of the followers sharing it)."""

    outcome: Outcome
    prompt: PairPrompt
    sample: Sample | None
    shared: list[tuple[Follower, Sample]] = field(default_factory=list)


@dataclass
class Parser:
    """Turns an outcome into a Sample: steps, label, label probabilities, correctness against the gold label."""

    run_id: str
    scheme_for: Callable[[str], LabelScheme]
    structured: bool = False

    def sample(self, outcome: Outcome, pair: Pair, sample_id: str | None = None) -> Sample:
        scheme = self.scheme_for(pair.scheme)
        parsed = self._parse(outcome.text, scheme)
        if outcome.reasoning and not parsed.steps:
            # A reasoning model's content may hold only the label; its steps are in the thinking.
            thought = self._parse(f"{outcome.reasoning}\n{outcome.text}", scheme)
            parsed = thought if thought.steps else parsed
        return Sample(
            sample_id=sample_id or outcome.key, run_id=self.run_id, pair_id=pair.pair_id,
            sample_index=outcome.sample_index, raw_text=outcome.text, steps=parsed.steps,
            predicted_label=parsed.label, label_probs=label_distribution(outcome.logprobs, scheme),
            parse_status=parsed.status, parse_reason=parsed.reason, consistent=parsed.consistent,
            correct=parsed.label == pair.label,
        )

    def _parse(self, text: str, scheme: LabelScheme) -> ParsedAnswer:
        return parse_structured(text, scheme) if self.structured else parse_answer(text, scheme)


_DONE = object()
WORKER_JOIN_S = 10.0  # backends notice `stop` within a token or a request; a stuck one is not waited for


@dataclass
class _Crash:
    error: BaseException


Durable = Callable[[Outcome, PairPrompt, list[Follower]], None]


def generate(backend: Backend, plan: Plan | StreamPlan, parser: Parser, budget: Budget, stop: threading.Event,
             tick_s: float = 1.0, durable: Durable | None = None) -> Iterator[Result | None]:
    """Results as they complete; None every `tick_s` without one (a moment to flush a batch).

    The backend runs in a worker thread, so whatever the caller does between results (writing a batch)
    never stalls requests in flight. Closing this generator stops admitting new work. `durable` is called
    in the backend's thread as each answer arrives (a journal); if it fails, nothing more is sent.
    """
    if isinstance(plan, Plan) and not plan.jobs and not plan.ready:
        return
    results: queue.Queue = queue.Queue()
    failed: list[BaseException] = []

    def emit(outcome: Outcome) -> None:
        if failed:
            return
        prompt, followers = plan.route(outcome)
        try:
            if durable is not None and outcome.ok:
                durable(outcome, prompt, followers)
        except BaseException as e:  # noqa: BLE001 - a failed durable write stops the run at once
            failed.append(e)
            stop.set()
            results.put(_Crash(e))
            return
        results.put((outcome, prompt, followers))

    def work() -> None:
        try:
            plan.bind(emit)
            backend.run(budget.admit(plan.jobs), emit, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, which raises it
            results.put(_Crash(e))
        finally:
            results.put(_DONE)

    worker = threading.Thread(target=work, name=f"cotgen-{backend.name}", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = results.get(timeout=tick_s)
            except queue.Empty:
                yield None
                continue
            if item is _DONE:
                return
            if isinstance(item, _Crash):
                raise item.error
            outcome, prompt, followers = item
            budget.record(outcome)
            if not outcome.ok:
                yield Result(outcome, prompt, None)
                continue
            shared = [(f, parser.sample(outcome, f.prompt.pair, f.sample_id)) for f in followers]
            yield Result(outcome, prompt, parser.sample(outcome, prompt.pair), shared)
    finally:
        stop.set()
        # Let the backend leave native code (a torch generate call) before the interpreter can exit:
        # a daemon thread still inside it when the process ends aborts it ("terminate called ...").
        worker.join(timeout=WORKER_JOIN_S)
