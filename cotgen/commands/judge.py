"""`cotgen judge` and `cotgen judge stats`: options and rendering; the work is cotgen.app.judge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from cotgen.app.judge import JudgeOptions, JudgeStageResult, JudgeStats, JudgeSummary, judge_agreement, run_judge
from cotgen.commands.common import (
    JsonOpt,
    WorkspaceOpt,
    console,
    emit_json,
    merge_overrides,
    open_workspace,
    pct,
    table,
)
from cotgen.commands.progress import ProgressDisplay
from cotgen.generation import Budget
from schemas.errors import CotgenError

app = typer.Typer(help="Grade each step of stored CoTs with a judge model (TaoSR-SHE's generative step judge).",
                  no_args_is_help=False)


def print_summary(summary: JudgeSummary) -> None:
    """The judge run table: verdicts, parse rate, share of steps judged wrong per step name."""
    s = summary.to_dict()
    st = s["store"]
    rows = [
        ["status", s["status"]], ["prompt", f"{s['prompt']} ({s['prompt_hash'][:12]})"],
        ["gold label shown to the judge", "yes" if s["gold_shown"] else "no"],
        ["CoTs judged in run", st["judgements"]],
        ["parse rate (some verdict found)", pct(st["parse_rate"])],
        ["parse status", ", ".join(f"{k} {v:,}" for k, v in st["status"].items()) or "-"],
        ["CoTs with a wrong step", st["with_wrong_step"]],
        ["this time: judged / failed", f"{s['judged']:,} / {s['failed']:,}"],
        ["this time: already done", s["already_done"]],
        ["this time: tokens in / out", f"{s['tokens_in']:,} / {s['tokens_out']:,}"],
        ["this time: wall time", f"{s['wall_s']:.1f} s"],
        ["this time: throughput", f"{s['steps_per_s'] or 0:.2f} steps/s"],
    ]
    if s["failures"]:
        rows.append(["failures", ", ".join(f"{k} {v}" for k, v in sorted(s["failures"].items()))])
    console.print(table(f"judge run {s['run']} ({s['samples_role']} CoTs; {s['backend']}: {s['model']})", ["", "value"], rows))
    if st["steps"]:
        console.print(table("steps judged wrong, per step name (this judge run)", ["step", "judged", "wrong", "share"],
                            [[r["step_name"], r["judged"], r["wrong"], pct(r["wrong_share"])] for r in st["steps"]]))
    if s["stop_reason"]:
        console.print(f"[yellow]stopped: {s['stop_reason']}; run the same command again to continue[/]")
    if s["failed"]:
        console.print(f"[yellow]{s['failed']} judge requests failed after retries; run the same command again to retry them[/]")


def print_stats(stats: JudgeStats) -> None:
    """Judge vs human step marks per step name, and the judge vs each CoT's own label."""
    rows = []
    for r in [*stats.steps, stats.overall]:
        c = r["confusion"]
        rows.append([r["step"], r["n"], pct(r["accuracy"]), "-" if r["kappa"] is None else f"{r['kappa']:.3f}",
                     c["both_correct"], c["human_correct_judge_wrong"], c["human_wrong_judge_correct"], c["both_wrong"]])
    console.print(table(f"judge (latest verdict per step) vs human step marks: {stats.overall['n']:,} steps marked by both",
                        ["step", "n", "accuracy", "kappa", "both ok", "human ok, judge wrong", "human wrong, judge ok",
                         "both wrong"], rows))
    lab = stats.labels
    console.print(table(f"judge vs the CoT's own label (gold after relabels): {lab['samples']:,} judged CoTs", ["", "CoTs"], [
        ["right label, a step judged wrong", lab["right_label_wrong_steps"] or 0],
        ["wrong label, every step judged right", lab["wrong_label_right_steps"] or 0],
    ]))


def render_stage(result: JudgeStageResult) -> None:
    """`cotgen run`'s judge table; a stage with failed requests ends the pipeline once its table is shown."""
    print_summary(result.summary)
    if result.summary.failed:
        raise CotgenError(f"judge: {result.summary.failed} judge requests failed after retries; run again to retry them")


@app.callback(invoke_without_command=True)
def judge_command(
    ctx: typer.Context,
    run: Annotated[list[str] | None, typer.Option("--run", help="Generation run to judge (repeatable; default: every run of --role).")] = None,
    role: Annotated[Literal["teacher", "policy"] | None, typer.Option("--role", help="Judge the CoTs of these runs (default: \\[judge].samples).")] = None,
    backend: Annotated[Literal["openai", "transformers", "vllm"] | None, typer.Option("--backend", help="Default: from \\[judge].")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Judge model name, path or bundled:NAME.")] = None,
    base_url: Annotated[list[str] | None, typer.Option("--base-url", help="OpenAI-compatible base URL (repeatable).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first K CoTs (generation order).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Judge run name (default: judge-role-model-settings hash; same name continues).")] = None,
    max_requests: Annotated[int | None, typer.Option("--max-requests", min=1, help="Stop after sending this many judge requests.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Stop after this many tokens (prompt + completion).")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Judge each step of the stored CoTs: correct or incorrect, a reason, the first wrong step; a re-run continues."""
    if ctx.invoked_subcommand is not None:
        return
    ws = open_workspace(workspace)
    config = merge_overrides(ws.config.judge, "judge", backend=backend, model=model, base_urls=base_url or None)
    options = JudgeOptions(config=config, role=role, runs=run or None, limit=limit, run_name=name,
                           budget=Budget(max_requests=max_requests, max_tokens=max_tokens))
    with ProgressDisplay(quiet=as_json) as show:
        summary = run_judge(ws, options, report=show)
    if as_json:
        emit_json(summary.to_dict())
    else:
        print_summary(summary)
    if summary.failed:
        raise SystemExit(1)  # a partial run: the same command retries what failed


@app.command("stats")
def stats_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """The judge against human step marks: per step name accuracy, Cohen's kappa and confusion."""
    stats = judge_agreement(open_workspace(workspace))
    if as_json:
        emit_json(stats.to_dict())
    else:
        print_stats(stats)


def register(root: typer.Typer) -> None:
    """Mount `cotgen judge` and `cotgen judge stats` on the root app."""
    root.add_typer(app, name="judge")
