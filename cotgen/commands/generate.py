"""`cotgen generate`: options and rendering; the run itself is cotgen.app.generate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from cotgen.app.generate import (
    GenerateOptions,
    GenerateStageResult,
    GenerateSummary,
    PromptPreview,
    preview_prompt,
    run_generation,
)
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
from schemas.run import RunRole


def print_summary(summary: GenerateSummary) -> None:
    """The run table and what to do next (continue, retry, draw new samples)."""
    s = summary.to_dict()
    st = s["store"]
    rows = [
        ["status", s.get("status", "")], ["prompt", f"{s['prompt']} ({s['prompt_hash'][:12]})"],
        ["samples in run", st["samples"]], ["pairs in run", st["pairs"]],
        ["parse rate (a label found)", pct(st["parse_rate"])],
        # A teacher shown the gold label and asked to explain it agrees by construction: that is compliance.
        ["label compliance (gold shown)" if s["gold_shown"] else "agreement with gold", pct(st["agreement"])],
        ["parse status", ", ".join(f"{k} {v:,}" for k, v in st["parse_status"].items()) or "-"],
        ["judgement contradicts label", st["inconsistent"]], ["cut at max_tokens", st["truncated"]],
        ["this time: completed / failed", f"{s['completed']:,} / {s['failed']:,}"],
        ["this time: already done", s["already_done"]],
        ["this time: tokens in / out", f"{s['tokens_in']:,} / {s['tokens_out']:,}"
         + (f" ({s['tokens_reasoning']:,} reasoning)" if s["tokens_reasoning"] else "")],
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


def print_preview(preview: PromptPreview) -> None:
    """The messages of the first pair, exactly as they would be sent."""
    console.print(f"[bold]{preview.prompt_name}[/] ({preview.prompt_hash[:12]}), pair {preview.pair_id}", highlight=False)
    for m in preview.messages:
        console.rule(m["role"])
        console.print(m["content"], markup=False, highlight=False)


def render_stage(result: GenerateStageResult) -> None:
    """`cotgen run`'s generate table; a stage with failed samples ends the pipeline once its table is shown."""
    print_summary(result.summary)
    if result.summary.failed:
        raise CotgenError(f"generate: {result.summary.failed} samples failed after retries; run again to retry them")


def generate_command(
    role: Annotated[RunRole, typer.Option("--role", help="teacher: stage-1 CoT with retrieved rules; policy: N samples for pass@N.")] = "teacher",
    backend: Annotated[Literal["openai", "transformers", "vllm"] | None, typer.Option("--backend", help="Default: from cotgen.toml.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name, path or bundled:NAME.")] = None,
    n: Annotated[int | None, typer.Option("-n", "--n", min=1, help="Samples per pair.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="K pairs from whole queries drawn at random (seeded by the role's seed; only the last query may be cut).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Only pairs from this source.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name (default: role-model-settings hash; same name continues).")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", min=1, help="Requests in flight per endpoint (openai).")] = None,
    base_url: Annotated[list[str] | None, typer.Option("--base-url", help="OpenAI-compatible base URL (repeatable: spreads load).")] = None,
    max_requests: Annotated[int | None, typer.Option("--max-requests", min=1, help="Stop after sending this many sample requests.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Stop after this many tokens (prompt + completion).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, help="Length cap of one completion (config max_tokens).")] = None,
    order: Annotated[Literal["cot_first", "label_first"] | None, typer.Option("--order", help="Label after or before the reasoning.")] = None,
    no_gold: Annotated[bool, typer.Option("--no-gold", help="Do not show the gold label (explain_gold = false): "
                                          "an unconditioned calibration pass, a run of its own.")] = False,
    prompt_only: Annotated[bool, typer.Option("--show-prompt", help="Print the first pair's prompt and exit.")] = False,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Generate CoT samples for the pairs in the store; interrupted or killed, the same command continues."""
    ws = open_workspace(workspace)
    config = merge_overrides(getattr(ws.config, role), "generate", backend=backend, model=model, n=n,
                             concurrency=concurrency, base_urls=base_url or None, max_tokens=max_new_tokens, order=order,
                             explain_gold=False if no_gold else None)
    options = GenerateOptions(role=role, config=config, limit=limit, source=source, run_name=run,
                              budget=Budget(max_requests=max_requests, max_tokens=max_tokens))
    if prompt_only:
        print_preview(preview_prompt(ws, options))
        return
    with ProgressDisplay(quiet=as_json) as show:
        summary = run_generation(ws, options, report=show)
    if as_json:
        emit_json(summary.to_dict())
    else:
        print_summary(summary)
    if summary.failed:
        raise SystemExit(1)  # a partial run: scripts see it; the same command retries what failed


def register(root: typer.Typer) -> None:
    """Mount `cotgen generate` on the root app."""
    root.command("generate")(generate_command)
