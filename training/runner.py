"""What the three trainers share: model loading, LoRA, resuming, the final save and the run manifest."""

from __future__ import annotations

import copy
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Trainer
from transformers.trainer import SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_callback import PrinterCallback, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from schemas.errors import CotgenError
from schemas.models import resolve_model
from training.configs import CotgenFields
from training.data import ExportedVersion
from training.manifest import read_run_manifest, write_run_manifest

ADAPTER_DIR = "adapter"


@dataclass
class RunResult:
    output_dir: Path
    global_step: int
    resumed_from: str | None
    train_metrics: dict[str, float] = field(default_factory=dict)
    disk_bytes: int = 0  # the run directory after the run: final model, checkpoints, manifest
    checkpoints: str = "full"  # or "model-only" (save_only_model)

    def to_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "global_step": self.global_step,
                "resumed_from": self.resumed_from, "train_metrics": self.train_metrics, "disk_bytes": self.disk_bytes,
                "checkpoints": self.checkpoints}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise CotgenError(f"model '{path}': its tokenizer has no chat template; training needs an instruct/chat model")
    return tokenizer


def model_init_kwargs(cfg: CotgenFields) -> dict[str, Any]:
    """Weights in bf16 when training in bf16, else fp32."""
    return {"dtype": torch.bfloat16 if cfg.bf16 else torch.float32}


def trainer_args(cfg: CotgenFields, output_dir: Path) -> Any:
    """A copy of the config pointed at the run directory (the caller's config stays as given)."""
    args = copy.copy(cfg)
    args.output_dir = str(output_dir)
    args.model_init_kwargs = model_init_kwargs(cfg)
    return args


def lora_config(cfg: CotgenFields) -> Any:
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")


class StepProgress(TrainerCallback):
    """Calls `on_step(global_step, max_steps)` after each optimiser step (and once at the start)."""

    def __init__(self, on_step: Callable[[int, int], None]) -> None:
        self.on_step = on_step

    def on_train_begin(self, args, state, control, **kwargs):
        self.on_step(state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.on_step(state.global_step, state.max_steps)


class ReplaySchedule(TrainerCallback):
    """Resuming from a model-only checkpoint (no scheduler state): step the fresh LR scheduler to the resumed
    global step, so the learning rate continues where it was instead of warming up again."""

    def on_train_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        if lr_scheduler is None:
            return
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore")
            for _ in range(state.global_step):
                lr_scheduler.step()


class TimeBudget(TrainerCallback):
    """Ends training after the step that crosses the budget; the Trainer then saves as at any normal end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.started >= self.seconds:
            control.should_training_stop = True
            control.should_save = True
        return control


def _check_same_data(output_dir: Path, trainer: str, version: ExportedVersion) -> None:
    previous = read_run_manifest(output_dir)
    if previous is None:
        return
    same = previous.get("trainer") == trainer and previous.get("dataset", {}).get("content_hash") == version.content_hash
    if not same:
        was = previous.get("dataset", {})
        raise CotgenError(
            f"{output_dir}: holds a {previous.get('trainer')} run on {was.get('name')}@v{was.get('version')}; "
            f"resuming it with {trainer} on {version.name}@v{version.version} would mix runs; pick another --output"
        )


def _save_final(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path, lora: bool) -> None:
    """A plain checkpoint in output_dir that any loader (eval, `generate --role policy`) can use; LoRA is merged."""
    main = trainer.is_world_process_zero()
    if not lora:
        trainer.save_model(str(output_dir))  # every rank calls it: under DeepSpeed/FSDP it gathers the shards
    elif main:
        trainer.model.save_pretrained(output_dir / ADAPTER_DIR)
        trainer.model.merge_and_unload().save_pretrained(output_dir)
    if main:
        tokenizer.save_pretrained(output_dir)


def disk_use(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (it writes the trainer state last); get_last_checkpoint
    would pick one killed mid-save, which cannot resume."""
    steps = {int(p.name.rsplit("-", 1)[1]): p for p in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
             if p.name.rsplit("-", 1)[1].isdigit() and (p / TRAINER_STATE_NAME).is_file()}
    return str(steps[max(steps)]) if steps else None


BuildTrainer = Callable[[str, PreTrainedTokenizerBase, Any], Trainer]
OnStep = Callable[[int, int], None]


def run_training(kind: str, version: ExportedVersion, model_ref: str, output_dir: Path, cfg: CotgenFields,
                 build: BuildTrainer, extra: dict[str, Any] | None = None, on_step: OnStep | None = None) -> RunResult:
    """Build a trainer, resume from the last checkpoint in output_dir if any, train, save, write the manifest."""
    _check_same_data(output_dir, kind, version)
    checkpoints = "model-only" if cfg.save_only_model else "full"
    model_path = resolve_model(model_ref)
    tokenizer = load_tokenizer(model_path)
    base_run = read_run_manifest(Path(model_path)) if Path(model_path).is_dir() else None
    manifest = {
        "trainer": kind,
        "dataset": version.lineage(),
        "scheme_definition": version.scheme.model_dump(),
        # A base model that is itself a cotgen run (DPO after SFT) keeps the chain of lineage.
        "base_model": {"ref": model_ref, "path": model_path,
                       "run": {k: base_run.get(k) for k in ("trainer", "dataset", "base_model")} if base_run else None},
        "config": cfg.to_dict(),
        **(extra or {}),
        "toolkit_version": _version("cotgen"),
        "versions": {p: _version(p) for p in ("trl", "transformers", "torch", "peft", "datasets")},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "precision": "bf16" if cfg.bf16 else "fp32",
        # Model-only checkpoints (the CPU default) resume weights, step, data position and LR schedule, not AdamW.
        "checkpoints": checkpoints,
        "python": platform.python_version(),
        "status": "running",
        "started_at": _now(),
    }
    write_run_manifest(output_dir, manifest)
    trainer = build(model_path, tokenizer, lora_config(cfg))
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts to stdout, which would break --json
    if on_step:
        trainer.add_callback(StepProgress(on_step))
    if cfg.time_budget_s:
        trainer.add_callback(TimeBudget(cfg.time_budget_s))
    resume = last_complete_checkpoint(output_dir)
    if resume and not (Path(resume) / SCHEDULER_NAME).exists():
        trainer.add_callback(ReplaySchedule())
    output = trainer.train(resume_from_checkpoint=resume)
    _save_final(trainer, tokenizer, output_dir, cfg.lora)
    metrics = {k: float(v) for k, v in output.metrics.items() if isinstance(v, int | float)}
    result = RunResult(output_dir, trainer.state.global_step, resume, metrics, disk_use(output_dir), checkpoints)
    write_run_manifest(output_dir, {**manifest, "status": "finished", "finished_at": _now(), **result.to_dict()})
    return result
