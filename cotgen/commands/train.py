"""`cotgen train sft|dpo|grpo` and `cotgen eval`: signatures and rendering; the use cases live in cotgen.app."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from cotgen.app.evaluate import EvalMode, EvalReport, EvalStageResult, evaluate_model
from cotgen.app.train import TrainerKind, TrainResult, TrainStageResult, build_config
from cotgen.app.train import train as train_run
from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace, table
from cotgen.commands.progress import ProgressDisplay

app = typer.Typer(no_args_is_help=True, help="Train on an exported dataset version with TRL (SFT, DPO, GRPO, SRPO).")

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Exported dataset NAME\\[@vK] (default: the latest version).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Base model: bundled:NAME, a local path or a run directory (default: \\[training].model, else \\[policy].model).")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Run directory, relative to the workspace (default: runs/NAME-KIND).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimiser steps (overrides epochs).")]
LoraOpt = Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (peft); the output holds the merged model and adapter/.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field (TRL's name or cotgen's short one), e.g. --set learning_rate=2e-5 --set group_size=4 (repeatable).")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of config fields (FIELD: VALUE), applied before --set.")]


def render_train(result: TrainResult) -> None:
    v = result.version
    rows = [["dataset", f"{v.name}@v{v.version} ({v.content_hash[:12]})"], ["base model", result.model_ref],
            ["steps", result.run.global_step], ["resumed from", result.run.resumed_from or "-"],
            *[[k, f"{x:.4g}"] for k, x in result.run.train_metrics.items()], ["output", str(result.output_dir)],
            ["disk use", f"{result.run.disk_bytes / 1e6:,.0f} MB ({result.run.checkpoints} checkpoints)"]]
    console.print(table(f"{result.kind} run", ["", "value"], rows))


def _train_command(kind: TrainerKind, dataset: str, model: str | None, output: Path | None, max_steps: int | None,
                   lora: bool, overrides: list[str] | None, config: Path | None, workspace: Path, as_json: bool) -> None:
    ws = open_workspace(workspace)
    with ProgressDisplay(quiet=as_json) as show:
        result = train_run(ws, kind, dataset, functools.partial(build_config, kind, max_steps, lora, overrides, config),
                           model, output, report=show)
    if as_json:
        emit_json(result.to_dict())
        return
    render_train(result)


TRAINERS = {
    "sft": "Supervised fine-tuning on the `sft` set (loss on the answer). Re-run to resume from the last checkpoint.",
    "dpo": "DPO on the `dpo` set (stage 2; start from the SFT run). Re-run to resume from the last checkpoint.",
    "grpo": "GRPO on the `grpo` set (stage 3): label + format rewards, plus step rewards when a `steps` set exists.",
    "srpo": "SRPO on the `grpo` set (TaoSR-SHE): GRPO whose step tokens get credit from a step judge and human step marks.",
}


def _register(kind: str, doc: str) -> None:
    def command(dataset: DatasetOpt, model: ModelOpt = None, output: OutputOpt = None, max_steps: MaxStepsOpt = None,
                lora: LoraOpt = False, overrides: SetOpt = None, config: ConfigOpt = None,
                workspace: WorkspaceOpt = Path("."), as_json: JsonOpt = False) -> None:
        _train_command(kind, dataset, model, output, max_steps, lora, overrides, config, workspace, as_json)

    command.__doc__ = doc
    app.command(kind)(command)


for _kind, _doc in TRAINERS.items():
    _register(_kind, _doc)


def render_eval(report: EvalReport) -> None:
    result, paths, m = report.result, report.files, report.result.metrics
    console.print(table(
        f"{result.model} on {result.dataset['name']}@v{result.dataset['version']}:{result.split} ({result.mode})",
        ["grade", "precision", "recall", "F1", "support"],
        [[g, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", s.support] for g, s in m.per_class.items()],
    ))
    console.print(table("summary", ["", "value"], [
        ["rows", m.n], ["scored", result.rows_from], ["parsed", f"{m.parsed}/{m.n}"], ["accuracy", f"{m.accuracy:.3f}"],
        ["macro-F1", f"{m.macro_f1:.3f}"], ["quadratic weighted kappa", f"{m.qwk:.3f}"],
        ["binary F1 (relevant set)", f"{m.binary_f1:.3f}"], ["rows/s", f"{result.rows_per_s:.2f}"],
    ]))
    console.print(table("confusion (rows gold, columns predicted)", ["gold", *m.labels, "unparsed"],
                        [[g, *row, miss] for g, row, miss in zip(m.labels, m.confusion, m.unparsed_by_gold, strict=True)]))
    if result.cumpt:
        c, cm = result.cumpt, result.cumpt["metrics"]
        console.print(table(f"CumPT tiers (beta={c['beta']:.4f} calibrated on {c['calibrated_on']}, "
                            f"macro-F1 there {c['validation_macro_f1']:.3f})", ["tier", "grades", "F1", "support"],
                            [[t, "/".join(gs), f"{cm['per_class'][t]['f1']:.3f}", cm["per_class"][t]["support"]]
                             for t, gs in c["tiers"].items()]))
        console.print(f"CumPT on {result.split}: macro-F1 {cm['macro_f1']:.3f}, accuracy {cm['accuracy']:.3f} "
                      f"(beta from {c['validation_rows']} {c['calibrated_on']} rows)")
    console.print(f"written: {paths['metrics']}, {paths['predictions']}, {paths['confusion']}")


def render_train_stage(result: TrainStageResult) -> None:
    if result.trained is not None:
        render_train(result.trained)


def render_eval_stage(result: EvalStageResult) -> None:
    render_eval(result.report)


def eval_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to evaluate: a run directory, a local path or bundled:NAME.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="NAME\\[@vK]\\[:split] (default split: test).")],
    mode: Annotated[EvalMode | None, typer.Option("--mode", help="generate | label-prob (default: label-prob for label_first exports, else generate).")] = None,
    cumpt: Annotated[bool, typer.Option("--cumpt", help="Calibrate the CumPT threshold on validation and report tiers.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N rows of each split.", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass.", min=1)] = 8,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Generate mode: answer length cap (default: \\[training].max_new_tokens).", min=1)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Report directory (default: runs/eval/MODEL-DATASET-vK-SPLIT).")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Macro-F1, accuracy, quadratic weighted kappa, binary F1 and the confusion matrix of a model on an exported split."""
    ws = open_workspace(workspace)
    with ProgressDisplay(quiet=as_json) as show:
        report = evaluate_model(ws, model, dataset, mode, cumpt, limit, batch_size, max_new_tokens, output, show)
    if as_json:
        emit_json(report.to_dict())
        return
    render_eval(report)


def register(root: typer.Typer) -> None:
    """Mount `cotgen train ...` as a sub-app and `cotgen eval` as a top-level command."""
    root.add_typer(app, name="train")
    root.command("eval")(eval_command)

