"""Generation as a use case: teacher CoT or policy samples for the pairs in the store.

Pairs and done keys come from the store, rules from the index, prompts from cotgen.prompting;
cotgen.generation drives the backend and yields samples, which are written here in short transactions
(DuckDB has one writer per file, so annotators and `cotgen status` get in between batches).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
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
from cotgen.app.journal import Journal, journal_path, read_journal
from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from cotgen.backends import create_backend
from cotgen.backends.base import Backend, Job, Message, Outcome, SamplingParams, TokenAlternatives
from cotgen.generation import (
    Budget,
    Follower,
    PairPrompt,
    Parser,
    Plan,
    Prefetch,
    Result,
    StreamPlan,
    generate,
    plan_jobs,
)
from cotgen.prompting import Prompt, load_prompt
from cotgen.structured import answer_schema
from curation.runs import (
    CompletionRow,
    Lease,
    SampleRow,
    complete_pairs,
    done_keys,
    done_samples,
    finish_run,
    generation_pair_ids,
    generation_pairs,
    heartbeat,
    open_run,
    pairs_by_id,
    run_summary,
    save_batch,
    save_retrievals,
    stored_completions,
    stored_retrievals,
)
from curation.store import Store, open_store
from retrieval.search import search_pairs
from schemas.config import BackendConfig
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.run import Run, RunRole, RunStatus
from schemas.sample import Sample
from schemas.workspace import Workspace

FLUSH_ROWS = 256  # a batch is written when it has this many samples...
FLUSH_S = 1.0  # ...or is this old
HEARTBEAT_S = 10.0  # the run lease is renewed this often (curation.runs.LEASE_TTL_S says when it lapses)
RETRIEVE_CHUNK = 512  # pairs per chunk: retrieved, rendered and planned while the previous chunk is in flight
FIRST_CHUNK = 16  # pairs in the first chunk (the first request waits for their retrieval); then doubling
PREFETCH_CHUNKS = 2  # chunks planned ahead of the requests (memory holds only these and the ones in flight)
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
    chunk_pairs: int = RETRIEVE_CHUNK

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
    tokens_reasoning: int
    gold_shown: bool
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
    tokens_reasoning: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def count(self, result: Result) -> None:
        o = result.outcome
        self.tokens_in += o.tokens_in
        self.tokens_out += o.tokens_out
        self.tokens_reasoning += o.tokens_reasoning
        if result.sample is None:
            self.failed += 1
            kind = (o.error or "error").split(":", 1)[0]
            self.failures[kind] = self.failures.get(kind, 0) + 1
        else:
            self.completed += 1 + len(result.shared)

    def rate(self) -> float:
        return self.completed / max(1e-6, time.monotonic() - self.started)


# ---------------------------------------------------------------------------- planning
def _identity(config: BackendConfig) -> dict[str, Any]:
    identity = {f: getattr(config, f) for f in IDENTITY_FIELDS}
    if config.extra_body:  # only when set, so runs made before extras existed keep their identity
        identity["extra_body"] = config.extra_body
    return identity


def default_run_name(role: RunRole, config: BackendConfig, prompt: Prompt, retrieval: str = "") -> str:
    """`teacher-<model>-<hash>`: the same settings continue the same run; other settings (or rules) start another."""
    model = config.model.removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(json.dumps([config.backend, config.model, prompt.hash, _identity(config), retrieval],
                                       sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{role}-{model}-{digest}"


def _check(role: RunRole, config: BackendConfig) -> None:
    if config.backend == "openai" and not config.base_urls:
        raise CotgenError(f"[{role}] backend = \"openai\" needs base_urls (e.g. [\"http://127.0.0.1:8000/v1\"]) or --base-url")


Hit = tuple[Rule, float]


@dataclass
class RuleSearch:
    """Retrieval for teacher prompts; `fingerprint` names the index contents and settings (part of the run identity).

    `rule` finds a document by id, so rules retrieved earlier (stored per pair under the fingerprint) need no search.
    """

    hits: Callable[[list[Pair]], list[list[Hit]]]
    fingerprint: str
    rule: Callable[[str], Rule | None]

    def search(self, pairs: list[Pair]) -> list[list[Rule]]:
        return [[rule for rule, _ in found] for found in self.hits(pairs)]


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

    def hits(pairs: list[Pair]) -> list[list[Hit]]:
        return search_pairs(idx, pairs, cfg.k, template=cfg.query_template)

    by_id = {d.id: d for d in idx.docs}
    return RuleSearch(hits, fingerprint, by_id.get)


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
        out.extend(_render(ws, config, prompt, chunk, rules))
        report(ProgressEvent("prompts", len(out), len(pairs), description, finished=len(out) == len(pairs)))
    return out


def _render(ws: Workspace, config: BackendConfig, prompt: Prompt, pairs: list[Pair],
            rules: list[list[Rule]]) -> list[PairPrompt]:
    out = []
    for pair, found in zip(pairs, rules, strict=True):
        messages = prompt.render(pair, ws.config.scheme(pair.scheme), config.order, rules=found,
                                 gold=pair.label if config.explain_gold else None, structured=config.structured)
        out.append(PairPrompt(pair=pair, messages=tuple(messages), rule_ids=tuple(r.id for r in found)))
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
                extra=config.extra_body or None,
            )
        return cache[pair.scheme]

    return params


# ---------------------------------------------------------------------------- persistence
_STORE_LOCK = threading.Lock()


@contextlib.contextmanager
def store_session(ws: Workspace) -> Iterator[Store]:
    """The store, opened by one thread of this process at a time (the planner thread and the writer share it)."""
    with _STORE_LOCK, open_store(ws) as store:
        yield store


class BatchWriter:
    """Buffers results and writes them in one short transaction per batch; a locked store only delays a batch."""

    def __init__(self, ws: Workspace, run_id: str, model: str, report: Reporter = silent, lease: Lease | None = None):
        self.ws = ws
        self.run_id = run_id
        self.model = model
        self.report = report
        self.lease = lease
        self.completions: list[CompletionRow] = []
        self.samples: list[SampleRow] = []
        self.last_flush = time.monotonic()
        self.last_beat = time.monotonic()
        self.written = 0
        self.warned = False

    def add(self, result: Result) -> None:
        if result.sample is None:
            return
        o, p = result.outcome, result.prompt
        self.add_sample(o, p, result.sample)
        for follower, sample in result.shared:
            self.add_sample(o, follower.prompt, sample, shares=o.key)

    def add_sample(self, o: Outcome, prompt: PairPrompt, sample: Sample, shares: str | None = None) -> None:
        """A sample and its completion row; a follower's row points at the request it `shares` (paid once)."""
        shares = shares or o.shared_from
        request = {"model": self.model, "params": o.job.params.key_fields(), "sample_index": o.sample_index,
                   "messages_sha256": hashlib.sha256(json.dumps(o.job.messages, sort_keys=True).encode()).hexdigest()}
        if shares:
            request["shares"] = shares
        self.completions.append(CompletionRow(
            request_key=sample.sample_id, run_id=self.run_id, pair_id=prompt.pair.pair_id,
            sample_index=sample.sample_index, request=request, text=o.text, finish_reason=o.finish_reason,
            tokens_in=0 if shares else o.tokens_in, tokens_out=0 if shares else o.tokens_out,
            logprobs=_logprobs_json(o.logprobs), latency_s=o.latency_s, attempts=o.attempts,
            reasoning=o.reasoning, tokens_reasoning=0 if shares else o.tokens_reasoning,
        ))
        self.samples.append(SampleRow(sample=sample, gold_label=prompt.pair.label, rule_ids=list(prompt.rule_ids)))

    def beat(self) -> None:
        """Renew the run lease now and then; a run taken over by another process stops here."""
        if self.lease is None or time.monotonic() - self.last_beat < HEARTBEAT_S:
            return
        try:
            with store_session(self.ws) as store:
                held = self._renew(store)
        except CotgenError:
            return  # a busy store delays the heartbeat; the lease lasts several of them
        self._check(held)

    def _renew(self, store: Store) -> bool:
        """Renew the lease in this session; False when another process holds the run now."""
        if self.lease is None:
            return True
        self.last_beat = time.monotonic()
        return heartbeat(store, self.run_id, self.lease)

    @staticmethod
    def _check(held: bool) -> None:
        if not held:
            raise CotgenError("another process took this run over (its lease had lapsed); stopped here")

    def due(self) -> bool:
        return bool(self.samples) and (len(self.samples) >= FLUSH_ROWS or time.monotonic() - self.last_flush >= FLUSH_S)

    def save(self, store: Store) -> None:
        """Write the batch in one transaction (a subclass storing other rows replaces this and `add`)."""
        save_batch(store, self.completions, self.samples)

    def flush(self, final: bool = False) -> None:
        if not self.samples:
            return
        try:
            with store_session(self.ws) as store:
                self.save(store)
                held = self._renew(store)
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
        self._check(held)  # what was answered is stored; a run taken over stops here


def _logprobs_json(logprobs: list[TokenAlternatives] | None) -> list | None:
    return [[t.token, [list(a) for a in t.top]] for t in logprobs] if logprobs else None


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
    """Generate every missing sample of the run; returns the run summary. Safe to interrupt, kill and re-run.

    Pairs stream through retrieval -> prompt -> request -> parse -> store in chunks; answers are journaled as
    they arrive. One process holds the run (a lease); an interrupt or an error marks it stopped and propagates.
    """
    role = options.role
    config = options.backend_config(ws)
    _check(role, config)
    config = config.model_copy(update={"model": ws.model(config.model)})  # `runs/sft` is the workspace's run
    prompt = load_prompt(role, config.prompt)
    rules = rule_search(ws) if role == "teacher" else None
    fingerprint = rules.fingerprint if rules else ""
    run = Run(run_id=uuid.uuid4().hex[:16],
              name=options.run_name or default_run_name(role, config, prompt, fingerprint),
              role=role, backend=config.backend, model=config.model, prompt_name=prompt.name, prompt_hash=prompt.hash,
              params={**_identity(config), "n": config.n, "identity": _identity(config), "retrieval": fingerprint,
                      "backend_config": config.model_dump(exclude={"n"})},
              started_at=datetime.now(timezone.utc).replace(tzinfo=None))
    lease = Lease.mine(uuid.uuid4().hex)
    with store_session(ws) as store:
        pair_ids = generation_pair_ids(store, options.source, options.limit, config.seed)
        if not pair_ids:
            where = f" from source '{options.source}'" if options.source else ""
            raise CotgenError(f"no pairs{where} in the store; run `cotgen ingest` first")
        run = open_run(store, run, lease)
        complete = complete_pairs(store, run.run_id, config.n)
    todo = [p for p in pair_ids if p not in complete]
    run_state = _RunState(ws, run, config, prompt, rules, options, report,
                          already=config.n * (len(pair_ids) - len(todo)), expected=config.n * len(pair_ids),
                          pairs=len(todo))
    writer = BatchWriter(ws, run.run_id, run.model, report, lease)
    parser = Parser(run_id=run.run_id, scheme_for=ws.config.scheme, structured=config.structured)
    invocation = Invocation()
    status: RunStatus = "done"
    journal: Journal | None = None
    with Interrupts() as interrupts:
        try:
            with interrupts.shielded():
                recovered = _replay(ws, run, parser, writer)
            # Journaled by a killed invocation, stored now: this invocation's work, not already done.
            planned = set(todo)
            run_state.recovered = sum(p in planned for p in recovered)
            invocation.completed += run_state.recovered
            journal = Journal(journal_path(ws.root, "generate", run.run_id))
            status = _drive(run_state, todo, writer, parser, journal, invocation, interrupts)
        except BaseException:
            if journal is not None:
                with contextlib.suppress(CotgenError):  # the error being raised says more
                    journal.close()
            with interrupts.shielded(), store_session(ws) as store:
                summary = _summary(run_state, invocation, run_summary(store, run.run_id))
                summary.status = "stopped"
                finish_run(store, run.run_id, lease, "stopped", summary.to_dict())
            raise
        with interrupts.shielded(), store_session(ws) as store:
            summary = _summary(run_state, invocation, run_summary(store, run.run_id))
            if status == "done" and summary.missing:
                status = "failed" if invocation.failed else "stopped"
            summary.status = status
            finish_run(store, run.run_id, lease, status, summary.to_dict())
        journal.remove()  # the store holds every answer now
    return summary


@dataclass
class _RunState:
    """What the run's parts share: its settings, the plan's counters and the backend once there is one."""

    ws: Workspace
    run: Run
    config: BackendConfig
    prompt: Prompt
    rules: RuleSearch | None
    options: GenerateOptions
    report: Reporter
    already: int  # samples of pairs complete before this invocation (not even planned)
    expected: int  # samples the run will hold when done
    pairs: int  # pairs to plan in this invocation
    backend: Backend | None = None
    stream: StreamPlan | None = None
    prepared: int = 0  # pairs retrieved, rendered and planned so far
    recovered: int = 0  # samples a killed invocation journaled, stored by this one
    shown_prepared: int = -1

    @property
    def planned(self) -> int:
        return self.already + (self.stream.total if self.stream else 0)

    @property
    def done(self) -> int:
        return self.already + (self.stream.done if self.stream else 0) - self.recovered


def _chunk_plans(state: _RunState, pair_ids: list[str]) -> Iterator[Plan]:
    """Chunk plans (16 pairs, doubling up to `chunk_pairs`): fetched, retrieved (stored retrievals reused), rendered,
    done keys skipped."""
    ws, config, rules = state.ws, state.config, state.rules
    params_for = sampling_for(ws, config)
    start, size = 0, min(FIRST_CHUNK, state.options.chunk_pairs)
    while start < len(pair_ids):
        ids = pair_ids[start:start + size]
        # Small chunks first, so the first request goes out seconds after the models load; then full ones.
        start, size = start + size, min(size * 2, state.options.chunk_pairs)
        with store_session(ws) as store:
            pairs = pairs_by_id(store, ids)
            known = stored_retrievals(store, rules.fingerprint, ids) if rules else {}
        found: list[list[Rule]] = [[] for _ in pairs]
        fresh: dict[str, tuple[list[str], list[float]]] = {}
        if rules:
            missing = [p for p in pairs if p.pair_id not in known]
            fresh = {p.pair_id: ([r.id for r, _ in hits], [float(sc) for _, sc in hits])
                     for p, hits in zip(missing, rules.hits(missing) if missing else [], strict=True)}
            known.update(fresh)
            found = [[r for r in map(rules.rule, known[p.pair_id][0]) if r is not None] for p in pairs]
        plan = plan_jobs(_render(ws, config, state.prompt, pairs, found), config.model, config.n, params_for)
        with store_session(ws) as store:  # one short session per chunk for everything it writes and checks
            if rules and fresh:
                save_retrievals(store, rules.fingerprint, fresh)
            plan.skip(done_samples(store, plan.probe_ids()))
            if plan.reuse:
                plan.answer_reuse(stored_completions(store, {key for key, _, _ in plan.reuse}))
        state.prepared += len(ids)
        yield plan


def _drive(state: _RunState, todo: list[str], writer: BatchWriter, parser: Parser, journal: Journal,
           invocation: Invocation, interrupts: Interrupts) -> RunStatus:
    """Stream the pairs to the backend and the answers to the journal and the store; stopped cleanly on interrupt."""
    stop = threading.Event()
    chunks = Prefetch(_chunk_plans(state, todo), PREFETCH_CHUNKS, stop)
    try:
        return _send(state, chunks, stop, writer, parser, journal, invocation, interrupts)
    finally:
        with interrupts.shielded():
            chunks.close()


def _send(state: _RunState, chunks: Prefetch, stop: threading.Event, writer: BatchWriter, parser: Parser,
          journal: Journal, invocation: Invocation, interrupts: Interrupts) -> RunStatus:
    budget, run = state.options.budget, state.run
    waiting: list[Plan] = []
    for plan in chunks:  # plan until there is work: a run with nothing left loads no model
        waiting.append(plan)
        if plan.jobs or plan.ready:
            break
    state.stream = StreamPlan(itertools.chain(waiting, chunks))
    if not any(p.jobs or p.ready for p in waiting):
        list(state.stream.jobs)  # count what the chunks found done
        return "done"
    state.backend = create_backend(state.config)
    _progress(state, invocation, writer)
    results = generate(state.backend, state.stream, parser, budget, stop,
                       durable=lambda o, p, fs: journal.append(_journal_record(run, o, p, fs)))
    interrupted = store_results(results, writer, invocation, interrupts, stop,
                                lambda: _progress(state, invocation, writer))
    _progress(state, invocation, writer, finished=True)
    if interrupted:
        raise KeyboardInterrupt
    return "stopped" if budget.exhausted else "done"


def store_results(results: Iterator[Result | None], writer: BatchWriter, invocation: Invocation,
                  interrupts: Interrupts, stop: threading.Event, progress: Callable[[], None]) -> bool:
    """Count, batch and show each result as it comes, keeping the lease; True when interrupted.

    However it ends, `stop` is set (the backend stops sending) and the last batch is stored.
    """
    try:
        for result in results:
            if result is not None:
                invocation.count(result)
                writer.add(result)
            progress()
            if writer.due():
                with interrupts.shielded():
                    writer.flush()
            with interrupts.shielded():
                writer.beat()
            if interrupts.pending:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        return True
    finally:
        stop.set()
        with interrupts.shielded():
            writer.flush(final=True)
    return interrupts.pending


def _journal_record(run: Run, o: Outcome, prompt: PairPrompt, followers: list[Follower]) -> dict[str, Any]:
    targets = [{"pair_id": prompt.pair.pair_id, "sample_id": o.key, "rule_ids": list(prompt.rule_ids),
                "shares": o.shared_from}]
    targets += [{"pair_id": f.prompt.pair.pair_id, "sample_id": f.sample_id, "rule_ids": list(f.prompt.rule_ids),
                 "shares": o.key} for f in followers]
    return {"run_id": run.run_id, "key": o.key, "sample_index": o.sample_index, "messages": list(o.job.messages),
            "params": o.job.params.key_fields(), "text": o.text, "reasoning": o.reasoning,
            "finish_reason": o.finish_reason, "tokens_in": o.tokens_in, "tokens_out": o.tokens_out,
            "tokens_reasoning": o.tokens_reasoning, "logprobs": _logprobs_json(o.logprobs),
            "latency_s": o.latency_s, "attempts": o.attempts, "targets": targets}


def _replay(ws: Workspace, run: Run, parser: Parser, writer: BatchWriter) -> list[str]:
    """Store what a killed invocation journaled but did not store; returns the pair of each sample recovered."""
    records = [r for r in read_journal(journal_path(ws.root, "generate", run.run_id)) if r.get("run_id") == run.run_id]
    if not records:
        return []
    with store_session(ws) as store:
        done = done_keys(store, [t["sample_id"] for r in records for t in r["targets"]])
        wanted = [r for r in records if any(t["sample_id"] not in done for t in r["targets"])]
        pairs = {p.pair_id: p for p in pairs_by_id(store, list({t["pair_id"] for r in wanted for t in r["targets"]}))}
    recovered: list[str] = []
    for r in wanted:
        params = SamplingParams(**{k: v for k, v in r["params"].items() if k != "extra"}, extra=r["params"].get("extra"))
        job = Job(pair_id=r["targets"][0]["pair_id"], messages=tuple(r["messages"]), params=params,
                  samples=((r["sample_index"], r["key"]),))
        logprobs = [TokenAlternatives(t, tuple((a, float(lp)) for a, lp in top)) for t, top in r["logprobs"]] \
            if r["logprobs"] else None
        o = Outcome(job=job, sample_index=r["sample_index"], key=r["key"], text=r["text"],
                    finish_reason=r["finish_reason"], tokens_in=r["tokens_in"], tokens_out=r["tokens_out"],
                    logprobs=logprobs, latency_s=r["latency_s"], attempts=r["attempts"], reasoning=r["reasoning"],
                    tokens_reasoning=r["tokens_reasoning"])
        for t in r["targets"]:
            pair = pairs.get(t["pair_id"])
            if pair is None or t["sample_id"] in done:
                continue
            prompt = PairPrompt(pair=pair, messages=job.messages, rule_ids=tuple(t["rule_ids"]))
            writer.add_sample(o, prompt, parser.sample(o, pair, t["sample_id"]), shares=t.get("shares"))
            recovered.append(pair.pair_id)
    writer.flush(final=True)
    return recovered


def _progress(state: _RunState, invocation: Invocation, writer: BatchWriter, finished: bool = False) -> None:
    """Two bars: pairs retrieved and planned (ahead of the requests), samples answered and stored."""
    backend = state.backend
    if state.prepared != state.shown_prepared:  # the planner's bar moves only when a chunk is planned
        state.shown_prepared = state.prepared
        what = "retrieving rules" if state.rules else "rendering prompts"
        state.report(ProgressEvent("retrieval", state.prepared, state.pairs, what, finished=state.prepared == state.pairs))
    state.report(ProgressEvent(
        "generate", state.done + invocation.completed, state.expected, state.run.name, finished=finished,
        fields={"rate": f"{invocation.rate():.2f}/s", "tok": invocation.tokens_in + invocation.tokens_out,
                "failed": invocation.failed, "err": backend.stats.errors if backend else 0,
                "prepared": state.prepared, "stored": writer.written},
    ))


def _summary(state: _RunState, invocation: Invocation, stored: dict[str, Any]) -> GenerateSummary:
    run, backend, budget = state.run, state.backend, state.options.budget
    wall = time.monotonic() - invocation.started
    return GenerateSummary(
        run=run.name, run_id=run.run_id, role=run.role, backend=run.backend, model=run.model,
        prompt=run.prompt_name, prompt_hash=run.prompt_hash,
        planned=state.planned, already_done=state.done, completed=invocation.completed,
        failed=invocation.failed, missing=max(0, state.planned - state.done - invocation.completed),
        stop_reason=budget.exhausted,
        # Keys are global: a request another run already answered is not sent again, nor stored twice.
        answered_elsewhere=max(0, state.done + invocation.completed - stored["samples"]),
        requests=backend.stats.requests if backend else 0,
        retries=dict(backend.stats.retries) if backend else {},
        failures=invocation.failures,
        tokens_in=invocation.tokens_in, tokens_out=invocation.tokens_out, tokens_reasoning=invocation.tokens_reasoning,
        gold_shown=state.config.explain_gold,
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
        pairs = generation_pairs(store, options.source, 1, config.seed)
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
