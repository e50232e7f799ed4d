"""`cotgen generate` and the `generate` pipeline stage: teacher CoT or policy samples for the pairs in the store.

Wiring only: pairs and done keys come from the store, rules from the index, prompts from cotgen.prompting;
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from cotgen.backends import create_backend
from cotgen.backends.base import Backend, SamplingParams
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, table
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
from curation.store import open_store
from schemas.config import BackendConfig
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.run import Run, RunStatus
from schemas.workspace import Workspace

Role = Literal["teacher", "policy"]
FLUSH_ROWS = 256  # a batch is written when it has this many samples...
FLUSH_S = 1.0  # ...or is this old
RETRIEVE_CHUNK = 512
PROGRESS_LINE_S = 30.0  # without a terminal (a log file, CI), a progress line this often
# Settings that change request keys: a run keeps them fixed (n may grow; more samples per pair are new keys).
IDENTITY_FIELDS = ("order", "temperature", "top_p", "max_tokens", "seed", "top_logprobs", "structured", "explain_gold")


@dataclass
class Overrides:
    """Command-line settings that replace the role's section of cotgen.toml for one invocation."""

    backend: str | None = None
    model: str | None = None
    n: int | None = None
    concurrency: int | None = None
    base_urls: list[str] | None = None
    max_new_tokens: int | None = None
    order: str | None = None

    def apply(self, config: BackendConfig) -> BackendConfig:
        update = {k: v for k, v in {
            "backend": self.backend, "model": self.model, "n": self.n, "concurrency": self.concurrency,
            "base_urls": self.base_urls or None, "max_tokens": self.max_new_tokens, "order": self.order,
        }.items() if v is not None}
        return BackendConfig.model_validate({**config.model_dump(), **update})


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


# ---------------------------------------------------------------------------- planning
def _identity(config: BackendConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in IDENTITY_FIELDS}


def default_run_name(role: Role, config: BackendConfig, prompt: Prompt, retrieval: str = "") -> str:
    """`teacher-<model>-<hash>`: the same settings continue the same run; other settings (or rules) start another."""
    model = config.model.removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(json.dumps([config.backend, config.model, prompt.hash, _identity(config), retrieval],
                                       sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{role}-{model}-{digest}"


def _check(role: Role, config: BackendConfig) -> None:
    if config.backend == "openai" and not config.base_urls:
        raise CotgenError(f"[{role}] backend = \"openai\" needs base_urls (e.g. [\"http://127.0.0.1:8000/v1\"]) or --base-url")


@dataclass
class RuleSearch:
    """Retrieval for teacher prompts; `fingerprint` names the index contents and settings (part of the run identity)."""

    search: Callable[[list[Pair]], list[list[Rule]]]
    fingerprint: str


def rule_search(ws: Workspace) -> RuleSearch:
    from cotgen.commands.index import index_dir, load_index
    from retrieval.search import search_pairs

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
                   search: Callable[[list[Pair]], list[list[Rule]]] | None, quiet: bool) -> list[PairPrompt]:
    """Messages for every pair; teacher prompts get the rules retrieved for the pair."""
    out: list[PairPrompt] = []
    with Progress(SpinnerColumn(), TextColumn("retrieving rules" if search else "rendering prompts"), BarColumn(),
                  MofNCompleteColumn(), console=err_console, transient=True, disable=quiet) as bar:
        task = bar.add_task("prompts", total=len(pairs))
        for chunk in _chunks(pairs, RETRIEVE_CHUNK):
            rules = search(chunk) if search else [[] for _ in chunk]
            for pair, found in zip(chunk, rules, strict=True):
                messages = prompt.render(pair, ws.config.scheme(pair.scheme), config.order, rules=found,
                                         gold=pair.label if config.explain_gold else None, structured=config.structured)
                out.append(PairPrompt(pair=pair, messages=tuple(messages), rule_ids=tuple(r.id for r in found)))
            bar.advance(task, len(chunk))
    return out


def sampling_for(ws: Workspace, config: BackendConfig) -> Callable[[Pair], SamplingParams]:
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

    def __init__(self, ws: Workspace, run_id: str, model: str):
        self.ws = ws
        self.run_id = run_id
        self.model = model
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

    def flush(self, final: bool = False) -> None:
        if not self.samples:
            return
        try:
            with open_store(self.ws) as store:
                save_batch(store, self.completions, self.samples)
        except CotgenError as e:
            if final:
                raise
            if not self.warned:  # keep the batch and try again at the next one
                err_console.print(f"[yellow]store busy, batch kept in memory: {e}[/]")
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


def _progress(quiet: bool) -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f}/s"), TimeRemainingColumn(),
        TextColumn("tok {task.fields[tokens]:,}"), TextColumn("err {task.fields[errors]}"),
        console=err_console, disable=quiet or not err_console.is_terminal,
    )


# ---------------------------------------------------------------------------- the run
def run_generation(ws: Workspace, role: Role, config: BackendConfig, *, limit: int | None = None,
                   source: str | None = None, run_name: str | None = None, budget: Budget | None = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Generate every missing sample of the run; returns the run summary. Safe to interrupt and re-run."""
    _check(role, config)
    config = config.model_copy(update={"model": ws.model(config.model)})  # `runs/sft` is the workspace's run
    budget = budget or Budget()
    prompt = load_prompt(role, config.prompt)
    rules = rule_search(ws) if role == "teacher" else None
    fingerprint = rules.fingerprint if rules else ""
    run = Run(run_id=uuid.uuid4().hex[:16], name=run_name or default_run_name(role, config, prompt, fingerprint),
              role=role, backend=config.backend, model=config.model, prompt_name=prompt.name, prompt_hash=prompt.hash,
              params={**_identity(config), "n": config.n, "identity": _identity(config), "retrieval": fingerprint,
                      "backend_config": config.model_dump(exclude={"n"})},
              started_at=datetime.now(timezone.utc).replace(tzinfo=None))
    with open_store(ws) as store:
        pairs = generation_pairs(store, source, limit)
        if not pairs:
            where = f" from source '{source}'" if source else ""
            raise CotgenError(f"no pairs{where} in the store; run `cotgen ingest` first")
        run = open_run(store, run)
        complete = complete_pairs(store, run.run_id, config.n)
    todo = [p for p in pairs if p.pair_id not in complete]
    prompts = render_prompts(ws, config, prompt, todo, rules.search if rules else None, quiet)
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
            status = _drive(ws, run, backend, plan, budget, invocation, interrupts, quiet)
        with interrupts.shielded(), open_store(ws) as store:
            summary = _summary(run, plan, invocation, budget, backend, run_summary(store, run.run_id))
            if status == "done" and summary["missing"]:
                status = "failed" if invocation.failed else "stopped"
            summary["status"] = status
            finish_run(store, run.run_id, status, summary)
    return summary


def _drive(ws: Workspace, run: Run, backend: Backend, plan: Plan, budget: Budget, invocation: Invocation,
           interrupts: Interrupts, quiet: bool) -> RunStatus:
    writer = BatchWriter(ws, run.run_id, run.model)
    parser = Parser(run_id=run.run_id, scheme_for=ws.config.scheme, structured=bool(plan.jobs[0].params.json_schema))
    stop = threading.Event()
    interrupted = False
    log_lines = not quiet and not err_console.is_terminal  # a log file gets a line now and then instead of a bar
    last_line = time.monotonic()
    with _progress(quiet) as bar:
        task = bar.add_task(f"{run.name}", total=plan.total, completed=plan.done, rate=0.0, tokens=0, errors=0)
        try:
            for result in generate(backend, plan, parser, budget, stop):
                if result is not None:
                    invocation.count(result)
                    writer.add(result)
                    elapsed = max(1e-6, time.monotonic() - invocation.started)
                    bar.update(task, advance=1 if result.sample else 0, rate=invocation.completed / elapsed,
                               tokens=invocation.tokens_in + invocation.tokens_out,
                               errors=backend.stats.errors)
                    if log_lines and time.monotonic() - last_line >= PROGRESS_LINE_S:
                        last_line = time.monotonic()
                        err_console.print(f"{run.name}: {plan.done + invocation.completed}/{plan.total} samples, "
                                          f"{invocation.completed / elapsed:.2f}/s, {invocation.failed} failed")
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
        if interrupted or interrupts.pending:
            with interrupts.shielded(), open_store(ws) as store:
                finish_run(store, run.run_id, "stopped", _summary(run, plan, invocation, budget, backend,
                                                                  run_summary(store, run.run_id)))
            raise KeyboardInterrupt
    return "stopped" if budget.exhausted else "done"


def _summary(run: Run, plan: Plan, invocation: Invocation, budget: Budget, backend: Backend | None,
             stored: dict[str, Any]) -> dict[str, Any]:
    wall = time.monotonic() - invocation.started
    missing = max(0, plan.total - plan.done - invocation.completed)
    return {
        "run": run.name, "run_id": run.run_id, "role": run.role, "backend": run.backend, "model": run.model,
        "prompt": run.prompt_name, "prompt_hash": run.prompt_hash,
        "planned": plan.total, "already_done": plan.done, "completed": invocation.completed,
        "failed": invocation.failed, "missing": missing, "stop_reason": budget.exhausted,
        # Keys are global: a request another run already answered is not sent again, nor stored twice.
        "answered_elsewhere": max(0, plan.done + invocation.completed - stored["samples"]),
        "requests": backend.stats.requests if backend else 0,
        "retries": dict(backend.stats.retries) if backend else {},
        "failures": invocation.failures,
        "tokens_in": invocation.tokens_in, "tokens_out": invocation.tokens_out,
        "wall_s": round(wall, 2),
        "samples_per_s": round(invocation.completed / wall, 3) if wall > 0 else None,
        "tokens_per_s": round(invocation.tokens_out / wall, 1) if wall > 0 else None,
        "store": stored,
    }


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def print_summary(s: dict[str, Any]) -> None:
    st = s["store"]
    rows = [
        ["status", s.get("status", "")], ["prompt", f"{s['prompt']} ({s['prompt_hash'][:12]})"],
        ["samples in run", st["samples"]], ["pairs in run", st["pairs"]],
        ["parse rate (a label found)", _pct(st["parse_rate"])], ["agreement with gold", _pct(st["agreement"])],
        ["parse status", ", ".join(f"{k} {v:,}" for k, v in st["parse_status"].items()) or "-"],
        ["judgement contradicts label", st["inconsistent"]], ["cut at max_tokens", st["truncated"]],
        ["this time: completed / failed", f"{s['completed']:,} / {s['failed']:,}"],
        ["this time: already done", s["already_done"]],
        ["this time: tokens in / out", f"{s['tokens_in']:,} / {s['tokens_out']:,}"],
        ["this time: wall time", f"{s['wall_s']:.1f} s"],
        ["this time: throughput", f"{s['samples_per_s'] or 0:.2f} samples/s, {s['tokens_per_s'] or 0:,.0f} tokens/s"],
    ]
    if s["retries"]:
        rows.append(["retries", ", ".join(f"{k} {v}" for k, v in sorted(s["retries"].items()))])
    if s["failures"]:
        rows.append(["failures", ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items()))])
    console.print(table(f"run {s['run']} ({s['role']}, {s['backend']}: {s['model']})", ["", "value"], rows))
    if s["stop_reason"]:
        console.print(f"[yellow]stopped: {s['stop_reason']}; run the same command again to continue[/]")
    if s["failed"]:
        console.print(f"[yellow]{s['failed']} samples failed after retries; run the same command again to retry them[/]")
    if s["answered_elsewhere"]:
        console.print(f"[yellow]{s['answered_elsewhere']:,} samples were already answered in another run (same model, prompt and "
                      f"sampling give the same request key, sent once per store); to draw new ones, change the "
                      f"backend's seed or sampling[/]")


def show_prompt(ws: Workspace, role: Role, config: BackendConfig, source: str | None) -> None:
    """Print the messages of the first pair, exactly as they would be sent."""
    prompt = load_prompt(role, config.prompt)
    with open_store(ws, read_only=True) as store:
        pairs = generation_pairs(store, source, 1)
    if not pairs:
        raise CotgenError("no pairs in the store; run `cotgen ingest` first")
    search = rule_search(ws).search if role == "teacher" else None
    messages = render_prompts(ws, config, prompt, pairs, search, quiet=True)[0].messages
    console.print(f"[bold]{prompt.name}[/] ({prompt.hash[:12]}), pair {pairs[0].pair_id}", highlight=False)
    for m in messages:
        console.rule(m["role"])
        console.print(m["content"], markup=False, highlight=False)


# ---------------------------------------------------------------------------- CLI
def generate_command(
    role: Annotated[str, typer.Option("--role", help="teacher: stage-1 CoT with retrieved rules; policy: N samples for pass@N.")] = "teacher",
    backend: Annotated[str | None, typer.Option("--backend", help="openai | transformers | vllm (default: from cotgen.toml).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name, path or bundled:NAME.")] = None,
    n: Annotated[int | None, typer.Option("-n", "--n", min=1, help="Samples per pair.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first K pairs (ingest order).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only pairs from this source.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name (default: role-model-settings hash; same name continues).")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests in flight per endpoint (openai).")] = None,
    base_url: Annotated[list[str] | None, typer.Option("--base-url", help="OpenAI-compatible base URL (repeatable: spreads load).")] = None,
    max_requests: Annotated[int | None, typer.Option("--max-requests", min=1, help="Stop after sending this many sample requests.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Stop after this many tokens (prompt + completion).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, help="Length cap of one completion (config max_tokens).")] = None,
    order: Annotated[str | None, typer.Option("--order", help="cot_first | label_first.")] = None,
    prompt_only: Annotated[bool, typer.Option("--show-prompt", help="Print the first pair's prompt and exit.")] = False,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Generate CoT samples for the pairs in the store; interrupted or killed, the same command continues."""
    ws = open_workspace(workspace)
    if role not in ("teacher", "policy"):
        raise CotgenError(f"--role: expected teacher or policy, got '{role}'")
    if backend is not None and backend not in ("openai", "transformers", "vllm"):
        raise CotgenError(f"--backend: expected openai, transformers or vllm, got '{backend}'")
    if order is not None and order not in ("cot_first", "label_first"):
        raise CotgenError(f"--order: expected cot_first or label_first, got '{order}'")
    overrides = Overrides(backend=backend, model=model, n=n, concurrency=concurrency, base_urls=base_url,
                          max_new_tokens=max_new_tokens, order=order)
    config = overrides.apply(getattr(ws.config, role))
    if prompt_only:
        show_prompt(ws, role, config, source)  # type: ignore[arg-type]
        return
    try:
        summary = run_generation(ws, role, config, limit=limit, source=source, run_name=run,  # type: ignore[arg-type]
                                 budget=Budget(max_requests=max_requests, max_tokens=max_tokens), quiet=as_json)
    except KeyboardInterrupt:
        # Exit here: typer turns KeyboardInterrupt into a return value that `cotgen.cli.main` does not pass on.
        err_console.print("interrupted: finished samples are stored; run the same command again to continue")
        raise SystemExit(130) from None
    if as_json:
        emit_json(summary)
    else:
        print_summary(summary)
    if summary["failed"]:
        raise SystemExit(1)  # a partial run: scripts see it; the same command retries what failed


class GenerateStage:
    """Teacher CoT over every pair with the [teacher] settings; re-running continues the same run."""

    name = "generate"

    def run(self, ws: Workspace) -> dict[str, Any]:
        summary = run_generation(ws, "teacher", ws.config.teacher)
        print_summary(summary)
        if summary["failed"]:
            raise CotgenError(f"generate: {summary['failed']} samples failed after retries; run again to retry them")
        return {k: summary[k] for k in ("run", "completed", "already_done", "failed", "wall_s")}


STAGES = [GenerateStage()]


def register(root: typer.Typer) -> None:
    """Mount `cotgen generate` on the root app."""
    root.command("generate")(generate_command)
