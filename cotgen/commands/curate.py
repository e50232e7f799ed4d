"""`cotgen curate stats|difficulty`, `cotgen export`, `cotgen datasets list|show|diff`, stages curate and export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, table
from cotgen.prompting import load_prompt
from curation.datasets import diff_versions, list_versions, show_version
from curation.difficulty import BINS, curate, store_difficulty
from curation.export import KINDS, ExportResult, export_dataset
from curation.stats import RunStats, export_pair_stats, resolve_runs, run_stats
from curation.store import open_store
from schemas.answer import AnswerOrder
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.workspace import Workspace

app = typer.Typer(help="pass@N statistics and difficulty of generation runs.", no_args_is_help=True)
datasets_app = typer.Typer(help="Exported dataset versions: list, show, diff.", no_args_is_help=True)

RunOpt = Annotated[list[str] | None, typer.Option("--run", help="Run name or id (repeatable; default: every run with samples).")]


def policy_prompt_renderer(ws: Workspace, order: AnswerOrder) -> Callable[[Pair], list[dict]]:
    """What the policy sees for a pair (the [policy] prompt generation uses), in the export's answer order."""
    prompt = load_prompt("policy", ws.config.policy.prompt)

    def render_policy_prompt(pair: Pair) -> list[dict]:
        return prompt.render(pair, ws.config.scheme(pair.scheme), order)

    return render_policy_prompt


def embedder(ws: Workspace) -> Callable[[list[str]], np.ndarray] | None:
    """The index's embedder for the diversity filter; None while the filter is off (nothing to load)."""
    if ws.config.curation.diversity_threshold is None:
        return None
    from retrieval.embedder import Embedder

    return Embedder(ws.config.index.embedder).encode


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def print_stats(stats: list[RunStats]) -> None:
    """TaoSR1's pass@1..N table, then per label accuracy and the confusion against gold for each run."""
    if not stats:
        console.print("no samples yet: run `cotgen generate` first")
        return
    n = max(s.n_max for s in stats)
    ks = list(range(1, n + 1))
    rows = [[s.name, s.pairs, _pct(s.parse_rate), *(_pct(s.pass_at_k.get(k)) for k in ks), _pct(s.majority_accuracy)]
            for s in stats]
    console.print(table("pass@k (unbiased, over pairs; samples parsed; majority vote)",
                        ["run", "pairs", "parsed", *(f"pass@{k}" for k in ks), "majority"], rows))
    for s in stats:
        console.print(table(f"{s.name}: per gold label", ["label", "pairs", "accuracy", f"pass@{s.n_max}", "majority"],
                            [[x.label, x.pairs, _pct(x.accuracy), _pct(x.pass_at_n), _pct(x.majority_accuracy)]
                             for x in s.labels]))
        predicted = sorted({p for row in s.confusion.values() for p in row})
        console.print(table(f"{s.name}: confusion (rows gold, columns predicted; samples)", ["gold", *predicted],
                            [[g, *(row.get(p, 0) for p in predicted)] for g, row in sorted(s.confusion.items())]))


@app.command("stats")
def stats_command(
    run: RunOpt = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="Also write per-pair statistics of the (single) run to this Parquet file.")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """pass@1..N, majority vote, parse rate, per-label accuracy and confusion, against gold after reviews."""
    ws = open_workspace(workspace)
    with open_store(ws, read_only=True) as store:
        runs = resolve_runs(store, run)
        if pairs is not None:
            if len(runs) != 1:
                raise CotgenError(f"--pairs: name exactly one run with --run ({len(runs)} selected)")
            written = export_pair_stats(store, runs[0], str(pairs))
            err_console.print(f"per-pair statistics of {written:,} pairs written to {pairs}")
        stats = run_stats(store, runs)
    if as_json:
        emit_json([s.to_dict() for s in stats])
        return
    print_stats(stats)


def compute_difficulty(ws: Workspace, names: list[str] | None) -> dict[str, dict[str, int]]:
    """Store difficulty for the named runs (default: every policy run with samples)."""
    with open_store(ws) as store:
        runs = resolve_runs(store, names, role=None if names else "policy")
        return store_difficulty(store, runs, ws.config.curation.difficulty)


def print_difficulty(summary: dict[str, dict[str, int]], bins: Any) -> None:
    title = f"difficulty (easy c >= {bins.easy:g}n, hard 0 < c <= {bins.gamma:g}n, unsolved c = 0)"
    console.print(table(title, ["run", *BINS], [[name, *(d[b] for b in BINS)] for name, d in summary.items()]))


@app.command("difficulty")
def difficulty_command(run: RunOpt = None, workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Bin each (pair, run) by its correct count c of n samples and store it (table pair_difficulty)."""
    ws = open_workspace(workspace)
    summary = compute_difficulty(ws, run)
    if as_json:
        emit_json(summary)
        return
    if not summary:
        console.print("no policy runs with samples yet")
        return
    print_difficulty(summary, ws.config.curation.difficulty)


def parse_kinds(values: list[str] | None, default: list[str]) -> list[str]:
    kinds = [k.strip() for v in (values or default) for k in v.split(",") if k.strip()]
    if "all" in kinds:
        return list(KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise CotgenError(f"--kind: '{bad[0]}' is not a kind (sft, dpo, grpo, steps, all)")
    return list(dict.fromkeys(kinds))


def run_export(ws: Workspace, name: str, kinds: list[str], order: AnswerOrder) -> ExportResult:
    columns = (SpinnerColumn(), TextColumn("[bold]export[/] {task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        return export_dataset(ws, name, kinds, order, policy_prompt_renderer(ws, order), embed=embedder(ws),
                              progress=lambda msg: bar.update(task, description=msg))


def print_export(result: ExportResult) -> None:
    sel = result.selection
    if result.version is None:
        rows = ", ".join(f"{k}: {v.get('rows', 0)} rows" for k, v in sel.items())
        console.print(f"[yellow]nothing to export for '{result.name}': no rows passed the selection[/] ({rows})")
        return
    what = "written" if result.created else "unchanged (same content hash; no new version)"
    console.print(f"{result.name} v{result.version} {what}: {result.path}  hash {result.content_hash[:16]}")
    splits = list(dict.fromkeys(s for c in result.counts.values() for s in c))
    console.print(table("rows", ["kind", *splits], [[k, *(c.get(s, 0) for s in splits)] for k, c in result.counts.items()]))
    if sel.get("sft", {}).get("balanced_out"):
        console.print(f"sft: {sel['sft']['balanced_out']:,} train rows left out to balance the labels (curation.sft_balance)")
    cases = sel.get("dpo", {}).get("pairs_by_case")
    if cases:
        console.print("dpo pairs by case: " + ", ".join(f"{k} {v:,}" for k, v in cases.items()))
    if sel.get("grpo", {}).get("candidates"):
        g = sel["grpo"]
        console.print(f"grpo: kept {g['kept']:,} of {g['candidates']:,} prompts (0 < c < gamma*n), {g['rows']:,} after "
                      f"balancing; label coefficient of variation {g['cv_before']:.3f} before, {g['cv_after']:.3f} after")
    waiting = [k for k in ("dpo", "grpo") if k in sel and not sel[k].get("rows")]
    if waiting:
        console.print(f"{' and '.join(waiting)}: no rows yet; they come from policy samples (`cotgen generate --role policy`)")


def export_command(
    name: Annotated[str | None, typer.Argument(help="Dataset name (default: export.name).")] = None,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="sft | dpo | grpo | steps | all (repeatable; default: export.kinds).")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="label_first | cot_first (default: export.format).")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Write datasets/NAME/vK: a DatasetDict per kind, Parquet, manifest.json and a dataset card; same rows, no new version."""
    ws = open_workspace(workspace)
    order = fmt or ws.config.export.format
    if order not in ("label_first", "cot_first"):
        raise CotgenError(f"--format: '{order}' is not label_first or cot_first")
    result = run_export(ws, name or ws.config.export.name, parse_kinds(kind, ws.config.export.kinds), order)
    if as_json:
        emit_json(result.to_dict())
        return
    print_export(result)


def _store_if_any(ws: Workspace):
    return open_store(ws, read_only=True) if ws.store_path.exists() else None


@datasets_app.command("list")
def datasets_list(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Every exported version: rows per kind, content hash, parent, and whether the store has it recorded."""
    ws = open_workspace(workspace)
    store = _store_if_any(ws)
    try:
        versions = list_versions(ws.datasets_dir, store)
    finally:
        if store is not None:
            store.close()
    if as_json:
        emit_json(versions)
        return
    rows = [[v["name"], f"v{v['version']}", f"v{v['parent']}" if v["parent"] else "-",
             ", ".join(f"{k} {n:,}" for k, n in v["rows"].items()), v["content_hash"][:12], v["created_at"],
             {True: "yes", False: "no", None: "-"}[v["registered"]]] for v in versions]
    console.print(table("datasets", ["name", "version", "parent", "rows", "hash", "created", "in store"], rows))


@datasets_app.command("show")
def datasets_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vK.")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """A version's manifest: counts, selection, lineage (runs, models, prompt hashes), config."""
    ws = open_workspace(workspace)
    m = show_version(ws.datasets_dir, DatasetRef.parse(ref))
    if as_json:
        emit_json(m)
        return
    facts = [["path", m["path"]], ["content hash", m["content_hash"]], ["parent", m["parent"] or "-"],
             ["format", m["format"]], ["scheme", (m.get("scheme") or {}).get("name", "-")],
             ["created", m["created_at"]], ["cotgen", m["toolkit_version"]],
             ["runs", ", ".join(f"{r['name']} ({r['role']}, {r['model']})" for r in m.get("runs", [])) or "-"]]
    console.print(table(f"{m['name']} v{m['version']}", ["", "value"], facts))
    splits = list(dict.fromkeys(s for c in m["counts"].values() for s in c))
    console.print(table("rows", ["kind", *splits], [[k, *(c.get(s, 0) for s in splits)] for k, c in m["counts"].items()]))


def _version(text: str) -> int:
    digits = text.lower().lstrip("v")
    if not digits.isdigit():
        raise CotgenError(f"version '{text}' is not vK or K")
    return int(digits)


@datasets_app.command("diff")
def datasets_diff(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    a: Annotated[str, typer.Argument(help="From version (vK).")],
    b: Annotated[str, typer.Argument(help="To version (vK).")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Pair ids added, removed and changed between two versions, per kind."""
    ws = open_workspace(workspace)
    diff = diff_versions(ws.datasets_dir, name, _version(a), _version(b))
    if as_json:
        emit_json(diff)
        return
    changes = ("added", "removed", "changed", "unchanged")
    console.print(table(f"{name} v{diff['from']} -> v{diff['to']} (pairs)", ["kind", *changes],
                        [[k, *(d[c]["pairs"] for c in changes)] for k, d in diff["kinds"].items()]))
    for kind, d in diff["kinds"].items():
        for c in ("added", "removed", "changed"):
            if d[c]["examples"]:
                console.print(f"{kind} {c}: {', '.join(d[c]['examples'])}")


class CurateStage:
    """Statistics of every run and difficulty of every policy run, in one pass; cheap to repeat."""

    name = "curate"

    def run(self, ws: Workspace) -> dict[str, Any]:
        with open_store(ws) as store:
            stats, summary = curate(store, resolve_runs(store), ws.config.curation.difficulty)
        print_stats(stats)
        if summary:
            print_difficulty(summary, ws.config.curation.difficulty)
        return {"runs": len(stats), "difficulty": summary}


class ExportStage:
    """Exports [export] as a new version, or nothing when the rows are unchanged."""

    name = "export"

    def run(self, ws: Workspace) -> dict[str, Any]:
        cfg = ws.config.export
        result = run_export(ws, cfg.name, list(cfg.kinds), cfg.format)
        print_export(result)
        return {"name": result.name, "version": result.version, "created": result.created,
                "content_hash": result.content_hash, "counts": result.counts}


STAGES = [CurateStage(), ExportStage()]


def register(root: typer.Typer) -> None:
    """Mount `curate` and `datasets` as sub-apps and `export` as a top-level command."""
    root.add_typer(app, name="curate")
    root.add_typer(datasets_app, name="datasets")
    root.command("export")(export_command)
