"""The one interface every LLM backend implements: take jobs, emit one outcome per requested sample."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass(frozen=True)
class SamplingParams:
    """What shapes one completion; every field is part of the request key."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 384
    seed: int | None = 0
    top_logprobs: int = 0
    json_schema: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None  # passed through to the server (extra_body) or vLLM's SamplingParams

    def key_fields(self) -> dict[str, Any]:
        fields = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                  "seed": self.seed, "top_logprobs": self.top_logprobs, "json_schema": self.json_schema}
        if self.extra:  # only when set, so keys made before extras existed stay the same
            fields["extra"] = self.extra
        return fields

    def sample_seed(self, sample_index: int) -> int | None:
        """Each sample of a pair gets its own seed, so N samples are not N copies."""
        return None if self.seed is None else self.seed + sample_index


@dataclass(frozen=True)
class Job:
    """One prompt and the samples of it still to produce, as (sample_index, request_key)."""

    pair_id: str
    messages: tuple[Message, ...]
    params: SamplingParams
    samples: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class TokenAlternatives:
    """One generated token and the most likely tokens at its position, with log-probabilities."""

    token: str
    top: tuple[tuple[str, float], ...]


@dataclass
class Outcome:
    """One sample's result: the text, or the error that ended its retries."""

    job: Job
    sample_index: int
    key: str
    text: str = ""
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    logprobs: list[TokenAlternatives] | None = None
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None
    reasoning: str | None = None  # a reasoning model's thinking, returned apart from the content
    tokens_reasoning: int = 0
    shared_from: str | None = None  # the request key whose answer this is (an identical prompt; nothing was sent)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BackendStats:
    """Counters a progress bar reads while the backend runs (updated from the backend's thread)."""

    requests: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self, kind: str) -> None:
        with self._lock:
            self.retries[kind] += 1

    def count_failure(self, kind: str) -> None:
        with self._lock:
            self.failures[kind] += 1

    @property
    def errors(self) -> int:
        return sum(self.retries.values()) + sum(self.failures.values())


Emit = Callable[[Outcome], None]


class Backend(ABC):
    """An LLM that turns jobs into outcomes. `run` blocks; it pulls jobs lazily so budgets can stop it."""

    name: str = "backend"

    def __init__(self, model: str):
        self.model = model
        self.stats = BackendStats()

    @abstractmethod
    def run(self, jobs: Iterator[Job], emit: Emit, stop: threading.Event) -> None:
        """Produce every sample of every job (emit one Outcome each) until jobs run out or `stop` is set."""
