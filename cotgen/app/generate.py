"""Generation as a use case: teacher CoT or policy samples for the pairs in the store.

Pairs and done keys come from the store, rules from the index, prompts from cotgen.prompting;
cotgen.generation drives the backend and yields samples, which are written here in short transactions
(DuckDB has one writer per file, so annotators and `cotgen status` get in between batches).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from cotgen.app.index import index_dir, load_index
from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from cotgen.backends import create_backend
from cotgen.backends.base import Backend, Message, SamplingParams
from cotgen.generation import Budget, PairPrompt, Parser, Plan, Result, generate, plan_jobs
from cotgen.prompting import Prompt, load_prompt
from cotgen.structured import answer_schema
from curation.runs import (
    CompletionRow,
    SampleRow,
    complete_pairs,
    done_keys,
    finish_run,
    generation_pairs,
    open_run,
    run_summary,
    save_batch,
)
from curation.store import Store, open_store
from retrieval.search import search_pairs
from schemas.config import BackendConfig
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.run import Run, RunRole, RunStatus
from schemas.workspace import Workspace

FLUSH_ROWS = 256  # a batch is written when it has this many samples...
FLUSH_S = 1.0  # ...or is this old
RETRIEVE_CHUNK = 512
# Settings that change request keys: a run keeps them fixed (n may grow; more samples per pair are new keys).
IDENTITY_FIELDS = ("order", "temperature", "top_p", "max_tokens", "seed", "top_logprobs", "structured", "explain_gold")


@dataclass
class GenerateOptions:
    """One invocation: the role, its backend settings (None: the role's section of cotgen.toml) and limits."""

    role: RunRole = "teacher"
    config: BackendConfig | None = None
    limit: int | None = None
    source: str | None = None
    run_name: str | None = None
    budget: Budget = field(default_factory=Budget)

    def backend_config(self, ws: Workspace) -> BackendConfig:
        return self.config if self.config is not None else getattr(ws.config, self.role)


@dataclass
class GenerateSummary:
    """What a run holds and what this invocation did; `to_dict()` is the --json document and the stored summary."""

    run: str
    run_id: str
    role: str
    backend: str
    model: str
    prompt: str
    prompt_hash: str
    planned: int
    already_done: int
    completed: int
    failed: int
    missing: int
    stop_reason: str | None
    answered_elsewhere: int
    requests: int
    retries: dict[str, int]
    failures: dict[str, int]
    tokens_in: int
    tokens_out: int
    wall_s: float
    samples_per_s: float | None
    tokens_per_s: float | None
    store: dict[str, Any]
    status: RunStatus = "running"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Invocation:
    """What this invocation did, as opposed to what the run holds in total."""

    started: float = field(default_factory=time.monotonic)
    completed: int = 0
    failed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def count(self, result: Result) -> None:
        o = result.outcome
        self.tokens_in += o.tokens_in
        self.tokens_out += o.tokens_out
        if result.sample is None:
            self.failed += 1
            kind = (o.error or "error").split(":", 1)[0]
            self.failures[kind] = self.failures.get(kind, 0) + 1
        else:
            self.completed += 1

    def rate(self) -> float:
        return self.completed / max(1e-6, time.monotonic() - self.started)


# ---------------------------------------------------------------------------- planning
def _identity(config: BackendConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in IDENTITY_FIELDS}


def default_run_name(role: RunRole, config: BackendConfig, prompt: Prompt, retrieval: str = "") -> str:
    """`teacher-<model>-<hash>`: the same settings continue the same run; other settings (or rules) start another."""
    model = config.model.removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(json.dumps([config.backend, config.model, prompt.hash, _identity(config), retrieval],
                                       sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{role}-{model}-{digest}"


def _check(role: RunRole, config: BackendConfig) -> None:
    if config.backend == "openai" and not config.base_urls:
        raise CotgenError(f"[{role}] backend = \"openai\" needs base_urls (e.g. [\"http://127.0.0.1:8000/v1\"]) or --base-url")


@dataclass
class RuleSearch:
    """Retrieval for teacher prompts; `fingerprint` names the index contents and settings (part of the run identity)."""

    search: Callable[[list[Pair]], list[list[Rule]]]
    fingerprint: str


def rule_search(ws: Workspace) -> RuleSearch:
    """The workspace's rule index as a search over pairs; a missing index is a one-line error naming the fix."""
    path = index_dir(ws)
    if not path.exists():
        raise CotgenError(f"teacher prompts need retrieved rules, but there is no rule index at {path}; "
                          "run `cotgen index build` first (or put \"index\" before \"generate\" in pipeline.stages)")
    idx = load_index(ws)  # checks the index; the embedder loads on the first search
    cfg = ws.config.index
    fingerprint = hashlib.sha256(json.dumps([idx.manifest.embedder, idx.manifest.documents, cfg.k, cfg.query_template],
                                            sort_keys=True).encode()).hexdigest()[:16]

    def search(pairs: list[Pair]) -> list[list[Rule]]:
        return [[rule for rule, _ in hits] for hits in search_pairs(idx, pairs, cfg.k, template=cfg.query_template)]

    return RuleSearch(search, fingerprint)


def _chunks(items: list[Pair], size: int) -> Iterator[list[Pair]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def render_prompts(ws: Workspace, config: BackendConfig, prompt: Prompt, pairs: list[Pair],
                   search: Callable[[list[Pair]], list[list[Rule]]] | None,
                   report: Reporter = silent) -> list[PairPrompt]:
    """Messages for every pair; teacher prompts get the rules retrieved for the pair."""
    out: list[PairPrompt] = []
    description = "retrieving rules" if search else "rendering prompts"
    report(ProgressEvent("prompts", 0, len(pairs), description))
    for chunk in _chunks(pairs, RETRIEVE_CHUNK):
        rules = search(chunk) if search else [[] for _ in chunk]
        for pair, found in zip(chunk, rules, strict=True):
            messages = prompt.render(pair, ws.config.scheme(pair.scheme), config.order, rules=found,
                                     gold=pair.label if config.explain_gold else None, structured=config.structured)
            out.append(PairPrompt(pair=pair, messages=tuple(messages), rule_ids=tuple(r.id for r in found)))
        report(ProgressEvent("prompts", len(out), len(pairs), description, finished=len(out) == len(pairs)))
    return out


def sampling_for(ws: Workspace, config: BackendConfig) -> Callable[[Pair], SamplingParams]:
    """Sampling params per pair (the answer schema depends on the pair's label scheme), built once per scheme."""
    cache: dict[str, SamplingParams] = {}

    def params(pair: Pair) -> SamplingParams:
        if pair.scheme not in cache:
            scheme = ws.config.scheme(pair.scheme)
            cache[pair.scheme] = SamplingParams(
                temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens, seed=config.seed,
                top_logprobs=config.top_logprobs if config.order == "label_first" else 0,
                json_schema=answer_schema(scheme, config.order) if config.structured else None,
            )
        return cache[pair.scheme]

    return params


# ---------------------------------------------------------------------------- persistence
class BatchWriter:
    """Buffers results and writes them in one short transaction per batch; a locked store only delays a batch."""

    def __init__(self, ws: Workspace, run_id: str, model: str, report: Reporter = silent):
        self.ws = ws
        self.run_id = run_id
        self.model = model
        self.report = report
        self.completions: list[CompletionRow] = []
        self.samples: list[SampleRow] = []
        self.last_flush = time.monotonic()
        self.written = 0
        self.warned = False

    def add(self, result: Result) -> None:
        if result.sample is None:
            return
        o, p = result.outcome, result.prompt
        request = {"model": self.model, "params": o.job.params.key_fields(), "sample_index": o.sample_index,
                   "messages_sha256": hashlib.sha256(json.dumps(o.job.messages, sort_keys=True).encode()).hexdigest()}
        self.completions.append(CompletionRow(
            request_key=o.key, run_id=self.run_id, pair_id=o.job.pair_id, sample_index=o.sample_index, request=request,
            text=o.text, finish_reason=o.finish_reason, tokens_in=o.tokens_in, tokens_out=o.tokens_out,
            logprobs=[[t.token, [list(a) for a in t.top]] for t in o.logprobs] if o.logprobs else None,
            latency_s=o.latency_s, attempts=o.attempts,
        ))
        self.samples.append(SampleRow(sample=result.sample, gold_label=p.pair.label, rule_ids=list(p.rule_ids)))

    def due(self) -> bool:
        return bool(self.samples) and (len(self.samples) >= FLUSH_ROWS or time.monotonic() - self.last_flush >= FLUSH_S)

    def save(self, store: Store) -> None:
        """Write the batch in one transaction (a subclass storing other rows replaces this and `add`)."""
        save_batch(store, self.completions, self.samples)

    def flush(self, final: bool = False) -> None:
        if not self.samples:
            return
        try:
            with open_store(self.ws) as store:
                self.save(store)
        except CotgenError as e:
            if final:
                raise
            if not self.warned:  # keep the batch and try again at the next one
                self.report(Notice(f"store busy, batch kept in memory: {e}", "warning"))
                self.warned = True
            self.last_flush = time.monotonic()
            return
        self.written += len(self.samples)
        self.completions, self.samples = [], []
        self.last_flush = time.monotonic()


class Interrupts:
    """Ctrl-C and SIGTERM end the run as KeyboardInterrupt, except inside `shielded()`, where they wait.

    DuckDB aborts a running statement on a pending signal, so a batch write or a run update is shielded:
    it completes, then the interrupt is acted on. SIGTERM (a scheduler stopping the job) is treated like Ctrl-C.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.shield = False
        self.pending = False
        self._previous: list = []

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = [(s, signal.signal(s, self._handle)) for s in self.SIGNALS]
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous:
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.shield:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        self.shield = True
        try:
            yield
        finally:
            self.shield = False


# ---------------------------------------------------------------------------- the run
def run_generation(ws: Workspace, options: GenerateOptions, report: Reporter = silent) -> GenerateSummary:
    """Generate every missing sample of the run; returns the run summary. Safe to interrupt and re-run.

    An interrupt (KeyboardInterrupt, SIGTERM) marks the run stopped, stores what finished and propagates.
    """
    role = options.role
    config = options.backend_config(ws)
    _check(role, config)
    config = config.model_copy(update={"model": ws.model(config.model)})  # `runs/sft` is the workspace's run
    budget = options.budget
    prompt = load_prompt(role, config.prompt)
    rules = rule_search(ws) if role == "teacher" else None
    fingerprint = rules.fingerprint if rules else ""
    run = Run(run_id=uuid.uuid4().hex[:16],
              name=options.run_name or default_run_name(role, config, prompt, fingerprint),
              role=role, backend=config.backend, model=config.model, prompt_name=prompt.name, prompt_hash=prompt.hash,
              params={**_identity(config), "n": config.n, "identity": _identity(config), "retrieval": fingerprint,
                      "backend_config": config.model_dump(exclude={"n"})},
              started_at=datetime.now(timezone.utc).replace(tzinfo=None))
    with open_store(ws) as store:
        pairs = generation_pairs(store, options.source, options.limit)
        if not pairs:
            where = f" from source '{options.source}'" if options.source else ""
            raise CotgenError(f"no pairs{where} in the store; run `cotgen ingest` first")
        run = open_run(store, run)
        complete = complete_pairs(store, run.run_id, config.n)
    todo = [p for p in pairs if p.pair_id not in complete]
    prompts = render_prompts(ws, config, prompt, todo, rules.search if rules else None, report)
    plan = plan_jobs(prompts, config.model, config.n, sampling_for(ws, config))
    plan.total += config.n * (len(pairs) - len(todo))
    plan.done += config.n * (len(pairs) - len(todo))
    with open_store(ws) as store:
        plan.skip(done_keys(store, plan.keys()))
    invocation = Invocation()
    status: RunStatus = "done"
    backend: Backend | None = None
    with Interrupts() as interrupts:
        if plan.jobs:
            backend = create_backend(config)
            status = _drive(ws, run, backend, plan, budget, invocation, interrupts, report)
        with interrupts.shielded(), open_store(ws) as store:
            summary = _summary(run, plan, invocation, budget, backend, run_summary(store, run.run_id))
            if status == "done" and summary.missing:
                status = "failed" if invocation.failed else "stopped"
            summary.status = status
            finish_run(store, run.run_id, status, summary.to_dict())
    return summary


def _drive(ws: Workspace, run: Run, backend: Backend, plan: Plan, budget: Budget, invocation: Invocation,
           interrupts: Interrupts, report: Reporter) -> RunStatus:
    writer = BatchWriter(ws, run.run_id, run.model, report)
    parser = Parser(run_id=run.run_id, scheme_for=ws.config.scheme, structured=bool(plan.jobs[0].params.json_schema))
    stop = threading.Event()
    interrupted = False
    report(_progress(run, plan, invocation, backend))
    try:
        for result in generate(backend, plan, parser, budget, stop):
            if result is not None:
                invocation.count(result)
                writer.add(result)
                report(_progress(run, plan, invocation, backend))
            if writer.due():
                with interrupts.shielded():
                    writer.flush()
            if interrupts.pending:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        with interrupts.shielded():
            writer.flush(final=True)
    report(_progress(run, plan, invocation, backend, finished=True))
    if interrupted or interrupts.pending:
        with interrupts.shielded(), open_store(ws) as store:
            summary = _summary(run, plan, invocation, budget, backend, run_summary(store, run.run_id))
            finish_run(store, run.run_id, "stopped", summary.to_dict())
        raise KeyboardInterrupt
    return "stopped" if budget.exhausted else "done"


def _progress(run: Run, plan: Plan, invocation: Invocation, backend: Backend, finished: bool = False) -> ProgressEvent:
    return ProgressEvent(
        "generate", plan.done + invocation.completed, plan.total, run.name, finished=finished,
        fields={"rate": f"{invocation.rate():.2f}/s", "tok": invocation.tokens_in + invocation.tokens_out,
                "failed": invocation.failed, "err": backend.stats.errors},
    )


def _summary(run: Run, plan: Plan, invocation: Invocation, budget: Budget, backend: Backend | None,
             stored: dict[str, Any]) -> GenerateSummary:
    wall = time.monotonic() - invocation.started
    return GenerateSummary(
        run=run.name, run_id=run.run_id, role=run.role, backend=run.backend, model=run.model,
        prompt=run.prompt_name, prompt_hash=run.prompt_hash,
        planned=plan.total, already_done=plan.done, completed=invocation.completed,
        failed=invocation.failed, missing=max(0, plan.total - plan.done - invocation.completed),
        stop_reason=budget.exhausted,
        # Keys are global: a request another run already answered is not sent again, nor stored twice.
        answered_elsewhere=max(0, plan.done + invocation.completed - stored["samples"]),
        requests=backend.stats.requests if backend else 0,
        retries=dict(backend.stats.retries) if backend else {},
        failures=invocation.failures,
        tokens_in=invocation.tokens_in, tokens_out=invocation.tokens_out,
        wall_s=round(wall, 2),
        samples_per_s=round(invocation.completed / wall, 3) if wall > 0 else None,
        tokens_per_s=round(invocation.tokens_out / wall, 1) if wall > 0 else None,
        store=stored,
    )


# ---------------------------------------------------------------------------- the prompt, as it would be sent
@dataclass
class PromptPreview:
    """The first pair's messages exactly as they would be sent, and which prompt made them."""

    prompt_name: str
    prompt_hash: str
    pair_id: str
    messages: tuple[Message, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "messages": list(self.messages)}


def preview_prompt(ws: Workspace, options: GenerateOptions) -> PromptPreview:
    """The messages of the first pair (of `options.source`), rendered with the role's prompt and rules."""
    config = options.backend_config(ws)
    prompt = load_prompt(options.role, config.prompt)
    with open_store(ws, read_only=True) as store:
        pairs = generation_pairs(store, options.source, 1)
    if not pairs:
        raise CotgenError("no pairs in the store; run `cotgen ingest` first")
    search = rule_search(ws).search if options.role == "teacher" else None
    messages = render_prompts(ws, config, prompt, pairs, search)[0].messages
    return PromptPreview(prompt.name, prompt.hash, pairs[0].pair_id, messages)


# ---------------------------------------------------------------------------- the pipeline stage
@dataclass
class GenerateStageResult:
    """The stage's run summary; its JSON form is the short one `cotgen run --json` has always shown."""

    summary: GenerateSummary

    def to_dict(self) -> dict[str, Any]:
        s = self.summary.to_dict()
        return {k: s[k] for k in ("run", "completed", "already_done", "failed", "wall_s")}


class GenerateStage:
    """Teacher CoT over every pair with the [teacher] settings; re-running continues the same run."""

    name = "generate"

    def run(self, ws: Workspace, report: Reporter) -> GenerateStageResult:
        return GenerateStageResult(run_generation(ws, GenerateOptions(role="teacher"), report))


STAGES = [GenerateStage()]
