"""A generation run without storage: plan keyed requests, skip the done ones, drive a backend, parse, yield samples.

Every sample request is keyed by a hash of (model, messages, sampling params, sample index); the key is
also the sample's id. The caller passes the keys already done and persists what this yields; nothing
here knows the store. Identical requests share a key, so a completion is never paid for twice.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from cotgen.backends.base import Backend, Job, Message, Outcome, SamplingParams
from cotgen.labelprobs import label_distribution
from cotgen.structured import parse_structured
from schemas.answer import parse_answer
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


@dataclass
class Plan:
    """The jobs still to send and how much of the run is already done."""

    jobs: list[Job]
    prompts: dict[str, PairPrompt]
    total: int
    done: int

    def keys(self) -> list[str]:
        return [key for job in self.jobs for _, key in job.samples]

    def skip(self, done_keys: set[str]) -> None:
        """Drop samples whose keys are done (e.g. stored since planning)."""
        jobs = []
        for job in self.jobs:
            rest = tuple(s for s in job.samples if s[1] not in done_keys)
            self.done += len(job.samples) - len(rest)
            if rest:
                jobs.append(replace(job, samples=rest))
        self.jobs = jobs


def plan_jobs(prompts: Iterable[PairPrompt], model: str, n: int, params_for: Callable[[Pair], SamplingParams]) -> Plan:
    """One job per pair with sample indexes 0..n-1; `Plan.skip` then drops the keys already done."""
    jobs: list[Job] = []
    by_pair: dict[str, PairPrompt] = {}
    for prompt in prompts:
        params = params_for(prompt.pair)
        digest = _prompt_digest(model, prompt.messages, params)
        by_pair[prompt.pair.pair_id] = prompt
        jobs.append(Job(pair_id=prompt.pair.pair_id, messages=prompt.messages, params=params,
                        samples=tuple((i, _sample_key(digest, i)) for i in range(n))))
    return Plan(jobs=jobs, prompts=by_pair, total=n * len(jobs), done=0)


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
    """One outcome and, when it succeeded, the parsed sample."""

    outcome: Outcome
    prompt: PairPrompt
    sample: Sample | None


@dataclass
class Parser:
    """Turns an outcome into a Sample: steps, label, label probabilities, correctness against the gold label."""

    run_id: str
    scheme_for: Callable[[str], LabelScheme]
    structured: bool = False

    def sample(self, outcome: Outcome, pair: Pair) -> Sample:
        scheme = self.scheme_for(pair.scheme)
        parsed = parse_structured(outcome.text, scheme) if self.structured else parse_answer(outcome.text, scheme)
        return Sample(
            sample_id=outcome.key, run_id=self.run_id, pair_id=pair.pair_id,
            sample_index=outcome.sample_index, raw_text=outcome.text, steps=parsed.steps,
            predicted_label=parsed.label, label_probs=label_distribution(outcome.logprobs, scheme),
            parse_status=parsed.status, parse_reason=parsed.reason, consistent=parsed.consistent,
            correct=parsed.label == pair.label,
        )


_DONE = object()
WORKER_JOIN_S = 10.0  # backends notice `stop` within a token or a request; a stuck one is not waited for


@dataclass
class _Crash:
    error: BaseException


def generate(backend: Backend, plan: Plan, parser: Parser, budget: Budget, stop: threading.Event,
             tick_s: float = 1.0) -> Iterator[Result | None]:
    """Results as they complete; None every `tick_s` without one (a moment to flush a batch).

    The backend runs in a worker thread, so whatever the caller does between results (writing a batch)
    never stalls requests in flight. Closing this generator stops admitting new work.
    """
    if not plan.jobs:
        return
    results: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            backend.run(budget.admit(plan.jobs), results.put, stop)
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
            budget.record(item)
            prompt = plan.prompts[item.job.pair_id]
            yield Result(item, prompt, parser.sample(item, prompt.pair) if item.ok else None)
    finally:
        stop.set()
        # Let the backend leave native code (a torch generate call) before the interpreter can exit:
        # a daemon thread still inside it when the process ends aborts it ("terminate called ...").
        worker.join(timeout=WORKER_JOIN_S)
