"""Stage 2: DPO on an exported `dpo` set (chosen = a correct sample, rejected = a wrong one) through TRL's DPOTrainer."""

from __future__ import annotations

from pathlib import Path

from trl import DPOTrainer

from training.configs import DPOTrainConfig
from training.data import ExportedVersion, training_columns
from training.runner import OnStep, RunResult, run_training, trainer_args


def train_dpo(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: DPOTrainConfig,
               on_step: OnStep | None = None) -> RunResult:
    train = training_columns(version.split("dpo", "train"), "dpo")

    def build(model_path, tokenizer, peft_config):
        return DPOTrainer(model=model_path, args=trainer_args(cfg, output_dir), train_dataset=train,
                          processing_class=tokenizer, peft_config=peft_config)

    return run_training("dpo", version, model_ref, output_dir, cfg, build, on_step=on_step)
