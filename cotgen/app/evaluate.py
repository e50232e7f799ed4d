"""Evaluation as a use case: a model on an exported split, the report written under runs/eval/, the eval stage."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from cotgen.app.train import latest_export, model_ref, open_export, stage_run_dir
from schemas.workspace import Workspace
from training.data import ExportedVersion
from training.manifest import read_run_manifest

if TYPE_CHECKING:  # training.evaluate imports torch (seconds)
    from training.evaluate import EvalOptions, EvalResult

EvalMode = Literal["generate", "label-prob"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[-60:]


@dataclass
class EvalReport:
    """The evaluation and the files it was written to (metrics.json, predictions.jsonl, confusion.png)."""

    result: EvalResult
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.summary(), "files": self.files}


def run_eval(ws: Workspace, model: str, version: ExportedVersion, opts: EvalOptions, out_dir: Path | None = None,
             report: Reporter = silent) -> EvalReport:
    """Evaluate `model` on `version` and write the report (default: runs/eval/MODEL-NAME-vK-SPLIT)."""
    from training.evaluate import evaluate, write_report

    out = out_dir or ws.runs_dir / "eval" / _slug(f"{Path(model).name}-{version.name}-v{version.version}-{opts.split}")
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        report(ProgressEvent("eval", done, None, "eval"))

    result = evaluate(model, version, opts, progress=advance)
    report(ProgressEvent("eval", done, done, "eval", finished=True))
    for warning in [*result.warnings, *(result.cumpt or {}).get("warnings", [])]:
        report(Notice(warning, "warning"))
    return EvalReport(result, write_report(result, out))


def evaluate_model(ws: Workspace, model: str, dataset: str, mode: EvalMode | None = None, cumpt: bool = False,
                   limit: int | None = None, batch_size: int = 8, max_new_tokens: int | None = None,
                   output: Path | None = None, report: Reporter = silent) -> EvalReport:
    """`cotgen eval`: `dataset` is NAME[@vK][:split] (default split: test); tiers from [training].tiers."""
    version, split = open_export(ws, dataset, allow_split=True)  # before torch loads: a wrong name is instant
    from training.evaluate import EvalOptions

    tcfg = ws.config.training
    opts = EvalOptions(split=split or "test", mode=mode, limit=limit, batch_size=batch_size,
                       max_new_tokens=max_new_tokens or tcfg.max_new_tokens, cumpt=cumpt,
                       tiers=tcfg.tiers.get(version.scheme.name))
    return run_eval(ws, model_ref(ws, model), version, opts, ws.path(str(output)) if output else None, report)


@dataclass
class EvalStageResult:
    """The eval stage: which model it scored, and the report."""

    model: str
    report: EvalReport

    def to_dict(self) -> dict[str, Any]:
        m = self.report.result.metrics
        return {"model": self.model, "macro_f1": m.macro_f1, "qwk": m.qwk, "accuracy": m.accuracy, "rows": m.n,
                "files": self.report.files}


class EvalStage:
    """The stage run's model (or the base model before any training) on the latest export's test split."""

    name = "eval"

    def run(self, ws: Workspace, report: Reporter) -> EvalStageResult:
        from training.evaluate import EvalOptions

        tcfg = ws.config.training
        version = latest_export(ws, self.name)
        trained = stage_run_dir(ws, version)
        finished = (read_run_manifest(trained) or {}).get("status") == "finished"
        model = str(trained) if finished else model_ref(ws, None)
        opts = EvalOptions(mode=None if tcfg.eval_mode == "auto" else tcfg.eval_mode, limit=tcfg.eval_limit,
                           max_new_tokens=tcfg.max_new_tokens, tiers=tcfg.tiers.get(version.scheme.name))
        return EvalStageResult(model, run_eval(ws, model, version, opts, None, report))


STAGES = [EvalStage()]
