"""`cotgen train sft|dpo|grpo` and `cotgen eval`, and the `train` / `eval` stages of `cotgen run`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cotgen.commands.common import JsonOpt, WorkspaceOpt, console, emit_json, open_workspace, table
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from schemas.workspace import Workspace
from training.configs import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig, TrainConfig
from training.data import ExportedVersion, open_version
from training.manifest import RUN_MANIFEST, read_run_manifest

app = typer.Typer(no_args_is_help=True, help="Train on an exported dataset version with TRL (SFT, DPO, GRPO).")

CONFIGS: dict[str, type[TrainConfig]] = {"sft": SFTTrainConfig, "dpo": DPOTrainConfig, "grpo": GRPOTrainConfig}

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="Exported dataset NAME\\[@vK] (default: the latest version).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Base model: bundled:NAME, a local path or a run directory (default: \\[training].model, else \\[policy].model).")]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Run directory, relative to the workspace (default: runs/NAME-KIND).")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after N optimiser steps (overrides epochs).")]
LoraOpt = Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (peft); the output holds the merged model and adapter/.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field, e.g. --set learning_rate=2e-5 --set group_size=4 (repeatable).")]


def _coerce(name: str, text: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float) or current is None:  # the optional fields are numbers (time_budget_s)
            return float(text)
        if isinstance(current, list):
            return [part.strip() for part in text.split(",") if part.strip()]
        return text
    except ValueError:
        raise CotgenError(f"--set {name}={text}: expected {'a number' if current is None else type(current).__name__}") from None


def build_config(kind: str, max_steps: int | None, lora: bool, overrides: list[str] | None) -> TrainConfig:
    """The trainer's defaults, then --set overrides, then --max-steps and --lora."""
    cfg = CONFIGS[kind]()
    fields = {f.name for f in dataclasses.fields(cfg)}
    for item in overrides or []:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise CotgenError(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        setattr(cfg, name, _coerce(name, value.strip(), getattr(cfg, name)))
    if max_steps is not None:
        cfg.max_steps = max_steps
    cfg.lora = cfg.lora or lora
    return cfg


def _model_ref(ws: Workspace, model: str | None) -> str:
    """--model, else [training].model, else [policy].model; workspace-relative paths resolve against it."""
    return ws.model(model or ws.config.training.model or ws.config.policy.model)


def _version(ws: Workspace, dataset: str, allow_split: bool = False) -> tuple[ExportedVersion, str | None]:
    ref = DatasetRef.parse(dataset)
    if ref.split and not allow_split:
        raise CotgenError(f"--dataset {dataset}: training reads the train split; drop ':{ref.split}'")
    return open_version(ws.datasets_dir, ref), ref.split


def train(kind: str, version: ExportedVersion, model_ref: str, output: Path, cfg: TrainConfig,
          progress: bool = True) -> Any:
    from training.dpo import train_dpo
    from training.grpo import train_grpo
    from training.sft import train_sft

    runner = {"sft": train_sft, "dpo": train_dpo, "grpo": train_grpo}[kind]
    return runner(version, model_ref, output, cfg, progress=progress)


def _train_command(kind: str, dataset: str, model: str | None, output: Path | None, max_steps: int | None,
                   lora: bool, overrides: list[str] | None, workspace: Path, as_json: bool) -> None:
    ws = open_workspace(workspace)
    version, _ = _version(ws, dataset)
    cfg = build_config(kind, max_steps, lora, overrides)
    out = ws.path(str(output)) if output else ws.runs_dir / f"{version.name}-{kind}"
    model_ref = _model_ref(ws, model)
    result = train(kind, version, model_ref, out, cfg, progress=not as_json)
    if as_json:
        emit_json({**result.to_dict(), "manifest": str(out / RUN_MANIFEST)})
        return
    rows = [["dataset", f"{version.name}@v{version.version} ({version.content_hash[:12]})"], ["base model", model_ref],
            ["steps", result.global_step], ["resumed from", result.resumed_from or "-"],
            *[[k, f"{v:.4g}"] for k, v in result.train_metrics.items()], ["output", str(out)]]
    console.print(table(f"{kind} run", ["", "value"], rows))


@app.command("sft")
def sft_command(dataset: DatasetOpt, model: ModelOpt = None, output: OutputOpt = None, max_steps: MaxStepsOpt = None,
                lora: LoraOpt = False, overrides: SetOpt = None, workspace: WorkspaceOpt = Path("."),
                as_json: JsonOpt = False) -> None:
    """Supervised fine-tuning on the `sft` set (loss on the answer). Re-run to resume from the last checkpoint."""
    _train_command("sft", dataset, model, output, max_steps, lora, overrides, workspace, as_json)


@app.command("dpo")
def dpo_command(dataset: DatasetOpt, model: ModelOpt = None, output: OutputOpt = None, max_steps: MaxStepsOpt = None,
                lora: LoraOpt = False, overrides: SetOpt = None, workspace: WorkspaceOpt = Path("."),
                as_json: JsonOpt = False) -> None:
    """DPO on the `dpo` set (stage 2; start from the SFT run). Re-run to resume from the last checkpoint."""
    _train_command("dpo", dataset, model, output, max_steps, lora, overrides, workspace, as_json)


@app.command("grpo")
def grpo_command(dataset: DatasetOpt, model: ModelOpt = None, output: OutputOpt = None, max_steps: MaxStepsOpt = None,
                 lora: LoraOpt = False, overrides: SetOpt = None, workspace: WorkspaceOpt = Path("."),
                 as_json: JsonOpt = False) -> None:
    """GRPO on the `grpo` set (stage 3): label + format rewards, plus step rewards when a `steps` set exists."""
    _train_command("grpo", dataset, model, output, max_steps, lora, overrides, workspace, as_json)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[-60:]


def run_eval(ws: Workspace, model_ref: str, version: ExportedVersion, opts: Any, out_dir: Path | None,
             show_progress: bool) -> tuple[Any, dict[str, str]]:
    """Evaluate with a progress bar, write the report; returns (result, written paths)."""
    from training.evaluate import evaluate, write_report

    out = out_dir or ws.runs_dir / "eval" / _slug(f"{Path(model_ref).name}-{version.name}-v{version.version}-{opts.split}")
    with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=not show_progress, transient=True) as bar:
        task = bar.add_task("eval", total=None)
        result = evaluate(model_ref, version, opts, progress=lambda n: bar.advance(task, n))
    return result, write_report(result, out)


def print_eval(result: Any, paths: dict[str, str]) -> None:
    m = result.metrics
    console.print(table(
        f"{result.model} on {result.dataset['name']}@v{result.dataset['version']}:{result.split} ({result.mode})",
        ["grade", "precision", "recall", "F1", "support"],
        [[g, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", s.support] for g, s in m.per_class.items()],
    ))
    console.print(table("summary", ["", "value"], [
        ["rows", m.n], ["parsed", f"{m.parsed}/{m.n}"], ["accuracy", f"{m.accuracy:.3f}"],
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
        console.print(f"CumPT on {result.split}: macro-F1 {cm['macro_f1']:.3f}, accuracy {cm['accuracy']:.3f}")
    console.print(f"written: {paths['metrics']}, {paths['predictions']}, {paths['confusion']}")


def eval_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Model to evaluate: a run directory, a local path or bundled:NAME.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="NAME\\[@vK]\\[:split] (default split: test).")],
    mode: Annotated[str | None, typer.Option("--mode", help="generate | label-prob (default: label-prob for label_first exports, else generate).")] = None,
    cumpt: Annotated[bool, typer.Option("--cumpt", help="Calibrate the CumPT threshold on validation and report tiers.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N rows of each split.", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass.", min=1)] = 8,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Generate mode: answer length cap (default: \\[training].max_new_tokens).", min=1)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Report directory (default: runs/eval/MODEL-DATASET-vK-SPLIT).")] = None,
    workspace: WorkspaceOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Macro-F1, accuracy, quadratic weighted kappa, binary F1 and the confusion matrix of a model on an exported split."""
    from training.evaluate import EvalOptions

    if mode not in (None, "generate", "label-prob"):
        raise CotgenError(f"--mode {mode}: expected generate or label-prob")
    ws = open_workspace(workspace)
    version, split = _version(ws, dataset, allow_split=True)
    tcfg = ws.config.training
    opts = EvalOptions(split=split or "test", mode=mode, limit=limit, batch_size=batch_size,
                       max_new_tokens=max_new_tokens or tcfg.max_new_tokens, cumpt=cumpt,
                       tiers=tcfg.tiers.get(version.scheme.name))
    result, paths = run_eval(ws, _model_ref(ws, model), version, opts, ws.path(str(output)) if output else None,
                             show_progress=not as_json)
    if as_json:
        emit_json({**result.summary(), "files": paths})
        return
    print_eval(result, paths)


def _latest_export(ws: Workspace, stage: str) -> ExportedVersion:
    name = ws.config.export.name
    if not DatasetRef(name).versions(ws.datasets_dir):
        raise CotgenError(f"stage {stage}: no exported version of '{name}' yet; run the export stage (`cotgen export {name}`) first")
    return open_version(ws.datasets_dir, DatasetRef(name))


def stage_run_dir(ws: Workspace, version: ExportedVersion) -> Path:
    return ws.runs_dir / f"{version.name}-{ws.config.training.trainer}"


class TrainStage:
    """[training].trainer on the latest export for [training].max_steps with [training].overrides; a finished run
    on the same data is kept."""

    name = "train"

    def run(self, ws: Workspace) -> dict[str, Any]:
        tcfg = ws.config.training
        version = _latest_export(ws, self.name)
        out = stage_run_dir(ws, version)
        done = read_run_manifest(out) or {}
        if (done.get("status") == "finished" and done.get("dataset", {}).get("content_hash") == version.content_hash
                and done.get("global_step", 0) >= tcfg.max_steps):
            console.print(f"{out}: already trained on {version.name}@v{version.version}; nothing to do")
            return {"output_dir": str(out), "global_step": done["global_step"], "skipped": True}
        cfg = build_config(tcfg.trainer, tcfg.max_steps, tcfg.lora, tcfg.overrides)
        result = train(tcfg.trainer, version, _model_ref(ws, None), out, cfg)
        return {**result.to_dict(), "skipped": False}


class EvalStage:
    """The stage run's model (or the base model before any training) on the latest export's test split."""

    name = "eval"

    def run(self, ws: Workspace) -> dict[str, Any]:
        from training.evaluate import EvalOptions

        tcfg = ws.config.training
        version = _latest_export(ws, self.name)
        trained = stage_run_dir(ws, version)
        finished = (read_run_manifest(trained) or {}).get("status") == "finished"
        model_ref = str(trained) if finished else _model_ref(ws, None)
        opts = EvalOptions(mode=None if tcfg.eval_mode == "auto" else tcfg.eval_mode, limit=tcfg.eval_limit,
                           max_new_tokens=tcfg.max_new_tokens, tiers=tcfg.tiers.get(version.scheme.name))
        result, paths = run_eval(ws, model_ref, version, opts, None, show_progress=True)
        print_eval(result, paths)
        m = result.metrics
        return {"model": model_ref, "macro_f1": m.macro_f1, "qwk": m.qwk, "accuracy": m.accuracy, "rows": m.n,
                "files": paths}


STAGES = [TrainStage(), EvalStage()]


def register(root: typer.Typer) -> None:
    """Mount `cotgen train ...` as a sub-app and `cotgen eval` as a top-level command."""
    root.add_typer(app, name="train")
    root.command("eval")(eval_command)
