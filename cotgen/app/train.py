"""Training as a use case: the trainer config from overrides, the run directory and model, the run, the stage.

`training` does the work (TRL trainers, resuming, the run manifest); this module resolves what the workspace
says (dataset versions, models, run directories, `[training]`) and reports progress as events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from schemas.workspace import Workspace
from training.data import ExportedVersion, open_version
from training.manifest import RUN_MANIFEST, read_run_manifest

if TYPE_CHECKING:  # training.configs imports torch and TRL (seconds); commands must not pay for it
    from training.configs import CotgenFields
    from training.runner import RunResult

TrainerKind = Literal["sft", "dpo", "grpo"]
TOML_OVERRIDES = "cotgen.toml [training].overrides"


def config_class(kind: TrainerKind) -> type[CotgenFields]:
    from training.configs import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig

    return {"sft": SFTTrainConfig, "dpo": DPOTrainConfig, "grpo": GRPOTrainConfig}[kind]


def parse_overrides(items: list[str], where: str) -> dict[str, str]:
    """FIELD=VALUE items as a mapping (the last of a repeated field wins, as on a command line)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CotgenError(f"{where} {item}: expected FIELD=VALUE")
        out[name.strip()] = value.strip()
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML mapping of trainer config fields."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CotgenError(f"--config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CotgenError(f"--config {path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CotgenError(f"--config {path}: expected a mapping of FIELD: VALUE, got {type(data).__name__}")
    return data


def build_config(kind: TrainerKind, max_steps: int | None, lora: bool, overrides: list[str] | None,
                 config_file: Path | None = None, where: str = "--set") -> CotgenFields:
    """The trainer's defaults, then the --config file, then overrides (`where` names them), then --max-steps/--lora."""
    from training.configs import parse_config

    sources: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        sources.append((f"--config {config_file}:", read_config_file(config_file)))
    sources.append((where, parse_overrides(overrides or [], where)))
    if max_steps is not None:
        sources.append(("--max-steps", {"max_steps": max_steps}))
    cfg = parse_config(config_class(kind), sources)
    cfg.lora = cfg.lora or lora
    return cfg


def model_ref(ws: Workspace, model: str | None) -> str:
    """--model, else [training].model, else [policy].model; workspace-relative paths resolve against it."""
    return ws.model(model or ws.config.training.model or ws.config.policy.model)


def open_export(ws: Workspace, dataset: str, allow_split: bool = False) -> tuple[ExportedVersion, str | None]:
    """The version a NAME[@vK][:split] reference names, and the split if one was given (eval only)."""
    ref = DatasetRef.parse(dataset)
    if ref.split and not allow_split:
        raise CotgenError(f"--dataset {dataset}: training reads the train split; drop ':{ref.split}'")
    return open_version(ws.datasets_dir, ref), ref.split


def latest_export(ws: Workspace, stage: str) -> ExportedVersion:
    """The newest version of [export].name, for the pipeline stages."""
    name = ws.config.export.name
    if not DatasetRef(name).versions(ws.datasets_dir):
        raise CotgenError(f"stage {stage}: no exported version of '{name}' yet; run the export stage "
                          f"(`cotgen export {name}`) first")
    return open_version(ws.datasets_dir, DatasetRef(name))


def stage_run_dir(ws: Workspace, version: ExportedVersion) -> Path:
    return ws.runs_dir / f"{version.name}-{ws.config.training.trainer}"


@dataclass
class TrainResult:
    """One training run: where, on what, from which model, and what the trainer reported."""

    kind: TrainerKind
    version: ExportedVersion
    model_ref: str
    run: RunResult

    @property
    def output_dir(self) -> Path:
        return self.run.output_dir

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.to_dict(), "manifest": str(self.run.output_dir / RUN_MANIFEST)}


def run_trainer(kind: TrainerKind, version: ExportedVersion, model: str, output: Path, cfg: CotgenFields,
                report: Reporter = silent) -> TrainResult:
    """Train `kind` on `version` into `output`, resuming from its last checkpoint; progress as 'train' events."""
    from training.dpo import train_dpo
    from training.grpo import train_grpo
    from training.sft import train_sft

    def on_step(step: int, total: int) -> None:
        report(ProgressEvent("train", step, total or None, f"{kind} on {version.name}@v{version.version}"))

    runner = {"sft": train_sft, "dpo": train_dpo, "grpo": train_grpo}[kind]
    run = runner(version, model, output, cfg, on_step=on_step)
    report(ProgressEvent("train", run.global_step, run.global_step, f"{kind} on {version.name}@v{version.version}",
                         finished=True))
    return TrainResult(kind, version, model, run)


def train(ws: Workspace, kind: TrainerKind, dataset: str, cfg: CotgenFields, model: str | None = None,
          output: Path | None = None, report: Reporter = silent) -> TrainResult:
    """`cotgen train KIND`: the run directory defaults to runs/NAME-KIND; re-running it resumes."""
    version, _ = open_export(ws, dataset)
    out = ws.path(str(output)) if output else ws.runs_dir / f"{version.name}-{kind}"
    return run_trainer(kind, version, model_ref(ws, model), out, cfg, report)


@dataclass
class TrainStageResult:
    """The train stage: the run it made, or the finished run it kept."""

    output_dir: Path
    global_step: int
    skipped: bool
    trained: TrainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.trained is None:
            return {"output_dir": str(self.output_dir), "global_step": self.global_step, "skipped": self.skipped}
        return {**self.trained.run.to_dict(), "skipped": self.skipped}


class TrainStage:
    """[training].trainer on the latest export for [training].max_steps with [training].overrides; a finished run
    on the same data is kept."""

    name = "train"

    def run(self, ws: Workspace, report: Reporter) -> TrainStageResult:
        tcfg = ws.config.training
        version = latest_export(ws, self.name)
        out = stage_run_dir(ws, version)
        done = read_run_manifest(out) or {}
        if (done.get("status") == "finished" and done.get("dataset", {}).get("content_hash") == version.content_hash
                and done.get("global_step", 0) >= tcfg.max_steps):
            report(Notice(f"{out}: already trained on {version.name}@v{version.version}; nothing to do"))
            return TrainStageResult(out, done["global_step"], skipped=True)
        cfg = build_config(tcfg.trainer, tcfg.max_steps, tcfg.lora, tcfg.overrides, where=TOML_OVERRIDES)
        result = run_trainer(tcfg.trainer, version, model_ref(ws, None), out, cfg, report)
        return TrainStageResult(out, result.run.global_step, skipped=False, trained=result)


STAGES = [TrainStage()]
