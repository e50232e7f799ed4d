"""`cotgen curate stats|difficulty`, `cotgen export`, `cotgen datasets list|show|diff`: signatures and rendering."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cotgen.app.curate import CurateResult, DifficultyResult, StatsResult, compute_difficulty, curate_stats
from cotgen.app.export import ExportStageResult, datasets_diff, datasets_list, datasets_show, export
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, err_console, open_workspace, pct, table
from cotgen.commands.progress import ProgressDisplay
from curation.difficulty import BINS, describe_bins
from curation.export import KINDS, ExportResult
from curation.stats import RunStats
from schemas.answer import AnswerOrder
from schemas.datasets import DatasetRef

app = typer.Typer(help="pass@N statistics and difficulty of generation runs.", no_args_is_help=True)
datasets_app = typer.Typer(help="Exported dataset versions: list, show, diff.", no_args_is_help=True)

RunOpt = Annotated[list[str] | None, typer.Option("--run", help="Run name or id (repeatable; default: every run with samples).")]


KIND_CHOICES = (*KINDS, "all")


def kind_list(value: str) -> str:
    """`--kind sft,dpo` or `--kind all`: one or more export kinds, comma-separated."""
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KIND_CHOICES] or ([] if kinds else [value])
    if bad:
        raise typer.BadParameter(f"'{bad[0]}' is not a kind ({', '.join(KIND_CHOICES)})")
    return ",".join(kinds)


def version_number(value: str) -> int:
    """`vK` or `K`."""
    digits = value.lower().lstrip("v")
    if not digits.isdigit():
        raise typer.BadParameter(f"version '{value}' is not vK or K")
    return int(digits)


def _run_name(s: RunStats) -> str:
    return f"{s.name} (gold shown)" if s.gold_shown else s.name


def print_quality(stats: list[RunStats]) -> None:
    """Intrinsic quality of teacher runs: what the texts look like, whatever the labels say."""
    if not stats:
        return
    rows = [[_run_name(s), q.samples if q.samples == q.of else f"{q.samples:,} of {q.of:,}", pct(q.truncation_rate), pct(q.repetition_rate), pct(q.steps_present_rate),
             pct(q.contradiction_rate), "-" if q.mean_step_chars is None else f"{q.mean_step_chars:.0f}",
             pct(q.clean_rate), pct(q.judged_wrong_rate)] for s in stats if (q := s.quality)]
    console.print(table("teacher quality over samples, gold not used (cut off at max_tokens, repeats a phrase, all five "
                        "steps, judgement contradicts the label, mean chars per step, clean parse, steps the "
                        "step judge graded wrong)",
                        ["run", "samples", "cut off", "repeats", "5 steps", "contra", "chars", "clean", "judged wrong"], rows))


def print_stats(stats: list[RunStats]) -> None:
    """TaoSR1's pass@1..N table, then per label accuracy and the confusion against gold for each run."""
    if not stats:
        console.print("no samples yet: run `cotgen generate` first")
        return
    n = max(s.n_max for s in stats)
    ks = list(range(1, n + 1))
    rows = [[_run_name(s), s.pairs, pct(s.parse_rate), *(pct(s.pass_at_k.get(k)) for k in ks),
             pct(s.majority_accuracy)] for s in stats]
    console.print(table("pass@k (unbiased, over pairs; samples parsed; majority vote, unparsed answers count as wrong)",
                        ["run", "pairs", "parsed", *(f"pass@{k}" for k in ks), "majority"], rows))
    if any(s.gold_shown for s in stats):
        console.print("[yellow]gold shown[/]: the prompt told the model the gold label (explain_gold), so its figures "
                      "are label compliance, not accuracy; run without it to measure the teacher")
    print_quality([s for s in stats if s.quality is not None])
    for s in stats:
        console.print(table(f"{_run_name(s)}: per gold label",
                            ["label", "pairs", s.agreement_name, f"pass@{s.n_max}", "majority"],
                            [[x.label, x.pairs, pct(x.accuracy), pct(x.pass_at_n), pct(x.majority_accuracy)]
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
    result: StatsResult = curate_stats(open_workspace(workspace), run, pairs)
    if result.pairs_written is not None:
        err_console.print(f"per-pair statistics of {result.pairs_written:,} pairs written to {result.pairs_path}")
    if as_json:
        emit_json(result.to_dict())
        return
    print_stats(result.runs)


def print_difficulty(result: DifficultyResult) -> None:
    title = f"difficulty ({describe_bins(result.bins)})"
    console.print(table(title, ["run", *BINS], [[name, *(d[b] for b in BINS)] for name, d in result.runs.items()]))


@app.command("difficulty")
def difficulty_command(run: RunOpt = None, workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Bin each (pair, run) by its correct count c of n samples and store it (table pair_difficulty)."""
    result = compute_difficulty(open_workspace(workspace), run)
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.runs:
        console.print("no policy runs with samples yet")
        return
    print_difficulty(result)


def render_curate(result: CurateResult) -> None:
    """The curate stage's tables in `cotgen run`."""
    print_stats(result.stats.runs)
    if result.difficulty.runs:
        print_difficulty(result.difficulty)


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
    if sel.get("dpo", {}).get("policy_in_format") is False:
        console.print("[yellow]dpo: the policy run was prompted for the other answer order; none of its answers is a "
                      "chosen one (the teacher's answer stands in)[/]")
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


def render_export(result: ExportStageResult) -> None:
    """The export stage's summary in `cotgen run`."""
    print_export(result.result)


def export_command(
    name: Annotated[str | None, typer.Argument(help="Dataset name (default: export.name).")] = None,
    kind: Annotated[list[str] | None, typer.Option("--kind", parser=kind_list, help="sft | dpo | grpo | steps | all, or several comma-separated (repeatable; default: export.kinds).")] = None,
    fmt: Annotated[AnswerOrder | None, typer.Option("--format", help="Answer order of the targets (default: export.format).")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Write datasets/NAME/vK: a DatasetDict per kind (plus `eval`: every labelled pair), Parquet, manifest.json,
    dropped.parquet and a dataset card; same rows, no new version."""
    ws = open_workspace(workspace)
    kinds = [k for v in kind for k in v.split(",")] if kind else None
    with ProgressDisplay(quiet=as_json) as show:
        result = export(ws, name, kinds, fmt, report=show)
    if as_json:
        emit_json(result.to_dict())
        return
    print_export(result)


@datasets_app.command("list")
def datasets_list_command(workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Every exported version: rows per kind, content hash, parent, and whether the store has it recorded."""
    versions = datasets_list(open_workspace(workspace))
    if as_json:
        emit_json(versions.to_dict())
        return
    rows = [[v["name"], f"v{v['version']}", f"v{v['parent']}" if v["parent"] else "-",
             ", ".join(f"{k} {n:,}" for k, n in v["rows"].items()), v["content_hash"][:12], v["created_at"],
             {True: "yes", False: "no", None: "-"}[v["registered"]]] for v in versions.versions]
    console.print(table("datasets", ["name", "version", "parent", "rows", "hash", "created", "in store"], rows))


@datasets_app.command("show")
def datasets_show_command(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vK.")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """A version's manifest: counts, selection, lineage (runs, models, prompt hashes), config."""
    m = datasets_show(open_workspace(workspace), DatasetRef.parse(ref)).manifest
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
    config = m.get("config", {})
    knobs = [[f"{section}.{key}", value] for section in ("curation", "export")
             for key, value in _flat(config.get(section, {})).items()]
    console.print(table("selection config", ["setting", "value"], knobs))
    dropped = (m.get("dropped") or {}).get("counts", {})
    if any(dropped.values()):
        console.print(table("dropped rows (dropped.parquet)", ["kind", "reason", "rows"],
                            [[k, r, n] for k, by in dropped.items() for r, n in by.items()]))


def _flat(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (difficulty.gamma)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, dict) and key != "split":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@datasets_app.command("diff")
def datasets_diff_command(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    a: Annotated[int, typer.Argument(parser=version_number, help="From version (vK).")],
    b: Annotated[int, typer.Argument(parser=version_number, help="To version (vK).")],
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Pair ids added, removed and changed between two versions, per kind."""
    diff = datasets_diff(open_workspace(workspace), name, a, b).diff
    if as_json:
        emit_json(diff)
        return
    changes = ("added", "removed", "changed", "unchanged")
    console.print(table(f"{name} v{diff['from']} -> v{diff['to']} (pairs)",
                        ["kind", *changes, "text changed", "metadata only"],
                        [[k, *(d[c]["pairs"] for c in changes), d["changed"]["text"], d["changed"]["metadata_only"]]
                         for k, d in diff["kinds"].items()]))
    for kind, d in diff["kinds"].items():
        if d["changed"]["columns"]:
            console.print(f"{kind} changed columns: "
                          + ", ".join(f"{c} ({n:,} pairs)" for c, n in d["changed"]["columns"].items()))
        for c in ("added", "removed", "changed"):
            if d[c]["examples"]:
                more = f" and {d[c]['more']:,} more" if d[c]["more"] else ""
                console.print(f"{kind} {c}: {', '.join(d[c]['examples'])}{more}")


def register(root: typer.Typer) -> None:
    """Mount `curate` and `datasets` as sub-apps and `export` as a top-level command."""
    root.add_typer(app, name="curate")
    root.add_typer(datasets_app, name="datasets")
    root.command("export")(export_command)
