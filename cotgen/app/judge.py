"""The step judge as a use case: grade the steps of stored CoTs with a judge model, and measure it against humans.

CoTs come from the store, their rules from the index, messages from cotgen.judge; cotgen.generation drives
the backend (one job per CoT, keyed by the judge request and the sample id) and generation's batch writer
and interrupt shielding store the verdicts. Answers are journaled as they arrive, as generation's are, so a
killed run loses at most the requests in flight and a re-run never judges a stored key again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from cotgen.app.generate import BatchWriter, Interrupts, Invocation, store_results
from cotgen.app.index import rules_by_id
from cotgen.app.journal import Journal, journal_path, read_journal
from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from cotgen.backends import create_backend
from cotgen.backends.base import Backend, Job, Outcome, SamplingParams
from cotgen.generation import Budget, PairPrompt, Plan, Result, generate, request_key
from cotgen.judge import Judgement, load_judge_prompt, parse_verdicts, render_messages, verdict_schema
from cotgen.prompting import Prompt
from curation.judge import (
    Candidate,
    JudgementRow,
    JudgeRun,
    VerdictRow,
    done_keys,
    finish_judge_run,
    judge_candidates,
    judge_run_summary,
    judge_stats,
    open_judge_run,
    save_judgements,
)
from curation.store import Store, open_store
from schemas.config import JudgeConfig
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.workspace import Workspace

SamplesRole = Literal["teacher", "policy"]
# Settings that change a judge request: a judge run keeps them fixed.
IDENTITY_FIELDS = ("temperature", "top_p", "max_tokens", "seed", "structured", "show_gold")


@dataclass
class JudgeOptions:
    """One invocation: the judge settings (None: [judge] of cotgen.toml), whose CoTs, and limits."""

    config: JudgeConfig | None = None
    role: SamplesRole | None = None  # None: config.samples
    runs: list[str] | None = None  # generation runs to judge; None: config.runs
    limit: int | None = None
    run_name: str | None = None
    budget: Budget = field(default_factory=Budget)


@dataclass
class JudgeSummary:
    """What a judge run holds and what this invocation did; `to_dict()` is the --json document."""

    run: str
    judge_run_id: str
    samples_role: str
    backend: str
    model: str
    prompt: str
    prompt_hash: str
    gold_shown: bool
    planned: int
    already_done: int
    judged: int
    failed: int
    missing: int
    stop_reason: str | None
    requests: int
    retries: dict[str, int]
    failures: dict[str, int]
    steps_judged: int
    tokens_in: int
    tokens_out: int
    wall_s: float
    steps_per_s: float | None
    store: dict[str, Any]
    status: str = "running"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Verdicts:
    """Generation's parser interface (`sample(outcome, pair)`) for judge answers; a job's id is its sample id."""

    names: dict[str, list[str]]

    def sample(self, outcome: Outcome, pair: Pair) -> Judgement:
        return parse_verdicts(outcome.text, self.names[outcome.job.pair_id])


class JudgeWriter(BatchWriter):
    """Generation's batch writer, storing judgements and their step verdicts instead of samples."""

    def __init__(self, ws: Workspace, run: JudgeRun, report: Reporter = silent):
        super().__init__(ws, run.judge_run_id, run.model, report)
        self.run = run
        self.steps = 0

    def add(self, result: Result) -> None:
        judgement: Judgement | None = result.sample  # type: ignore[assignment]  # the judge parser's result
        if judgement is None:
            return
        o = result.outcome
        self.steps += sum(v.correct is not None for v in judgement.steps)
        self.samples.append(JudgementRow(  # type: ignore[arg-type]  # the batch holds judgements here
            judge_key=o.key, judge_run_id=self.run.judge_run_id, sample_id=o.job.pair_id,
            pair_id=result.prompt.pair.pair_id, model=self.run.model, prompt_hash=self.run.prompt_hash, text=o.text,
            status=judgement.status, note=judgement.note, first_wrong=judgement.first_wrong,
            verdicts=[VerdictRow(v.index, v.name, v.correct, v.reason) for v in judgement.steps],
            finish_reason=o.finish_reason, tokens_in=o.tokens_in, tokens_out=o.tokens_out, latency_s=o.latency_s,
            attempts=o.attempts,
        ))

    def save(self, store: Store) -> None:
        save_judgements(store, self.samples)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- planning
def _identity(config: JudgeConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in IDENTITY_FIELDS}


def default_run_name(role: str, config: JudgeConfig, prompt: Prompt) -> str:
    """`judge-<role>-<model>-<hash>`: the same settings continue the same judge run."""
    model = config.model.removeprefix("bundled:").rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.sha256(json.dumps([config.backend, config.model, prompt.hash, _identity(config)],
                                       sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"judge-{role}-{model}-{digest}"


def plan_judgements(ws: Workspace, config: JudgeConfig, prompt: Prompt, candidates: list[Candidate],
                    rules: dict[str, Rule]) -> tuple[Plan, _Verdicts]:
    """One job per CoT; its key hashes the judge request and the sample id (two identical CoTs get a verdict each)."""
    jobs: list[Job] = []
    prompts: dict[str, PairPrompt] = {}
    names: dict[str, list[str]] = {}
    for c in candidates:
        step_names = [s.name for s in c.steps]
        messages = tuple(render_messages(
            prompt, c.pair, ws.config.scheme(c.pair.scheme), c.steps, rules=[rules[r] for r in c.rule_ids if r in rules],
            gold=c.pair.label if config.show_gold else None, predicted=c.predicted, structured=config.structured))
        params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                                seed=config.seed, top_logprobs=0,
                                json_schema=verdict_schema(step_names) if config.structured else None)
        key = hashlib.sha256(f"{request_key(config.model, messages, params, 0)}:{c.sample_id}".encode()).hexdigest()[:32]
        jobs.append(Job(pair_id=c.sample_id, messages=messages, params=params, samples=((0, key),)))
        prompts[c.sample_id] = PairPrompt(pair=c.pair, messages=messages, rule_ids=tuple(c.rule_ids))
        names[c.sample_id] = step_names
    return Plan(jobs=jobs, prompts=prompts, total=len(jobs), done=0), _Verdicts(names)


# ---------------------------------------------------------------------------- the run
def run_judge(ws: Workspace, options: JudgeOptions, report: Reporter = silent) -> JudgeSummary:
    """Judge every CoT of the selected runs not judged yet; safe to interrupt (or kill) and re-run.

    An interrupt (KeyboardInterrupt, SIGTERM) marks the judge run stopped, stores what finished and propagates.
    """
    config = options.config or ws.config.judge
    if config.backend == "openai" and not config.base_urls:
        raise CotgenError('[judge] backend = "openai" needs base_urls (e.g. ["http://127.0.0.1:8000/v1"]) or --base-url')
    config = config.model_copy(update={"model": ws.model(config.model)})
    role = options.role or config.samples
    runs = config.runs if options.runs is None else options.runs
    prompt = load_judge_prompt(config.prompt)
    run = JudgeRun(judge_run_id=uuid.uuid4().hex[:16], name=options.run_name or default_run_name(role, config, prompt),
                   samples_role=role, backend=config.backend, model=config.model, prompt_name=prompt.name,
                   prompt_hash=prompt.hash, started_at=datetime.now(timezone.utc).replace(tzinfo=None),
                   params={"identity": _identity(config), "runs": runs, "backend_config": config.model_dump()})
    with open_store(ws) as store:
        candidates = judge_candidates(store, role, runs, options.limit)
        if not candidates:
            which = f"runs {', '.join(runs)}" if runs else f"{role} runs"
            raise CotgenError(f"no CoT samples with steps in the {which}; run `cotgen generate` first")
        run = open_judge_run(store, run)
    rules = rules_by_id(ws, {r for c in candidates for r in c.rule_ids}, report)
    plan, parser = plan_judgements(ws, config, prompt, candidates, rules)
    writer = JudgeWriter(ws, run, report)
    with open_store(ws) as store:
        plan.skip(done_keys(store, plan.keys()))
    journal_file = journal_path(ws.root, "judge", run.judge_run_id)
    recovered = _replay(journal_file, plan, parser, writer)
    if recovered:
        report(Notice(f"stored {recovered:,} verdicts a killed judge run had received (journal {journal_file.name})"))
    backend: Backend | None = create_backend(config) if plan.jobs else None
    invocation = Invocation()  # after loading a local model: throughput is the judging's own
    invocation.completed += recovered
    status = "done"
    journal = Journal(journal_file)
    with Interrupts() as interrupts:
        try:
            if backend is not None:
                status = _drive(run, backend, plan, parser, writer, journal, options.budget, invocation,
                                interrupts, report)
        except BaseException:
            with contextlib.suppress(CotgenError):  # the error being raised says more
                journal.close()
            with interrupts.shielded(), open_store(ws) as store:  # interrupted or failed: stopped, not "running"
                summary = _summary(run, plan, invocation, writer, options.budget, backend,
                                   judge_run_summary(store, run.judge_run_id))
                summary.status = "stopped"
                finish_judge_run(store, run.judge_run_id, "stopped", summary.to_dict())
            raise
        with interrupts.shielded(), open_store(ws) as store:
            summary = _summary(run, plan, invocation, writer, options.budget, backend, judge_run_summary(store, run.judge_run_id))
            if status == "done" and summary.missing:
                status = "failed" if invocation.failed else "stopped"
            summary.status = status
            finish_judge_run(store, run.judge_run_id, status, summary.to_dict())
    journal.remove()  # the store holds every verdict now
    return summary


def _replay(path: Path, plan: Plan, parser: _Verdicts, writer: JudgeWriter) -> int:
    """Store the answers a killed invocation journaled for jobs still planned and drop those jobs; returns how many.

    Like generation's, they count as this invocation's work (paid before, stored now), not as already done."""
    jobs = {key: job for job in plan.jobs for _, key in job.samples}
    records = {r["key"]: r for r in read_journal(path) if r.get("key") in jobs}
    for r in records.values():
        job = jobs[r["key"]]
        o = Outcome(job=job, sample_index=0, key=r["key"], text=r["text"], finish_reason=r["finish_reason"],
                    tokens_in=r["tokens_in"], tokens_out=r["tokens_out"], latency_s=r["latency_s"],
                    attempts=r["attempts"])
        pair_prompt = plan.prompts[job.pair_id]
        writer.add(Result(o, pair_prompt, parser.sample(o, pair_prompt.pair)))  # type: ignore[arg-type]  # a Judgement
    writer.flush(final=True)
    plan.jobs = [job for job in plan.jobs if job.samples[0][1] not in records]  # one sample per judge job
    return len(records)


def _journal_record(o: Outcome) -> dict[str, Any]:
    return {"key": o.key, "text": o.text, "finish_reason": o.finish_reason, "tokens_in": o.tokens_in,
            "tokens_out": o.tokens_out, "latency_s": o.latency_s, "attempts": o.attempts}


def _drive(run: JudgeRun, backend: Backend, plan: Plan, parser: _Verdicts, writer: JudgeWriter,
           journal: Journal, budget: Budget, invocation: Invocation, interrupts: Interrupts, report: Reporter) -> str:
    stop = threading.Event()
    report(_progress(run, plan, invocation, writer, backend))
    results = generate(backend, plan, parser, budget, stop,  # type: ignore[arg-type]  # a parser of the same interface
                       durable=lambda o, p, fs: journal.append(_journal_record(o)))
    interrupted = store_results(results, writer, invocation, interrupts, stop,
                                lambda: report(_progress(run, plan, invocation, writer, backend)))
    report(_progress(run, plan, invocation, writer, backend, finished=True))
    if interrupted:
        raise KeyboardInterrupt
    return "stopped" if budget.exhausted else "done"


def _progress(run: JudgeRun, plan: Plan, invocation: Invocation, writer: JudgeWriter, backend: Backend,
              finished: bool = False) -> ProgressEvent:
    wall = max(1e-6, time.monotonic() - invocation.started)
    return ProgressEvent(
        "judge", plan.done + invocation.completed, plan.total, run.name, finished=finished,
        fields={"steps/s": f"{writer.steps / wall:.2f}", "tok": invocation.tokens_in + invocation.tokens_out,
                "failed": invocation.failed, "err": backend.stats.errors},
    )


def _summary(run: JudgeRun, plan: Plan, invocation: Invocation, writer: JudgeWriter, budget: Budget,
             backend: Backend | None, stored: dict[str, Any]) -> JudgeSummary:
    wall = time.monotonic() - invocation.started
    return JudgeSummary(
        run=run.name, judge_run_id=run.judge_run_id, samples_role=run.samples_role, backend=run.backend,
        model=run.model, prompt=run.prompt_name, prompt_hash=run.prompt_hash,
        gold_shown=bool(run.params["identity"]["show_gold"]), planned=plan.total, already_done=plan.done, judged=invocation.completed, failed=invocation.failed,
        missing=max(0, plan.total - plan.done - invocation.completed), stop_reason=budget.exhausted,
        requests=backend.stats.requests if backend else 0, retries=dict(backend.stats.retries) if backend else {},
        failures=invocation.failures, steps_judged=writer.steps,
        tokens_in=invocation.tokens_in, tokens_out=invocation.tokens_out, wall_s=round(wall, 2),
        steps_per_s=round(writer.steps / wall, 3) if wall > 0 else None, store=stored,
    )


@dataclass
class JudgeStageResult:
    """The stage's judge run summary; its JSON form is the short one `cotgen run --json` shows."""

    summary: JudgeSummary

    def to_dict(self) -> dict[str, Any]:
        s = self.summary.to_dict()
        return {k: s[k] for k in ("run", "judged", "already_done", "failed", "steps_judged", "wall_s")}


class JudgeStage:
    """The [judge] settings over the CoTs of its runs; re-running continues the same judge run."""

    name = "judge"

    def run(self, ws: Workspace, report: Reporter) -> JudgeStageResult:
        return JudgeStageResult(run_judge(ws, JudgeOptions(), report))


STAGES = [JudgeStage()]


# ---------------------------------------------------------------------------- judge vs humans
@dataclass
class JudgeStats:
    """The judge's latest verdicts against human step marks (per step name and overall) and against labels."""

    steps: list[dict[str, Any]]
    overall: dict[str, Any]
    labels: dict[str, Any]
    judge_runs: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_agreement(ws: Workspace) -> JudgeStats:
    """`cotgen judge stats`, from the latest verdict of each judged step."""
    with open_store(ws, read_only=True) as store:
        return JudgeStats(**judge_stats(store))
