"""Stage 1: SFT on an exported `sft` set through TRL's SFTTrainer (prompt/completion, loss on the answer)."""

from __future__ import annotations

from pathlib import Path

from trl import SFTTrainer

from training.configs import SFTTrainConfig
from training.data import ExportedVersion, training_columns
from training.runner import OnStep, RunResult, run_training, trainer_args


def train_sft(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: SFTTrainConfig,
               on_step: OnStep | None = None) -> RunResult:
    train = training_columns(version.split("sft", "train"), "sft")

    def build(model_path, tokenizer, peft_config):
        return SFTTrainer(model=model_path, args=trainer_args(cfg, output_dir), train_dataset=train,
                          processing_class=tokenizer, peft_config=peft_config)

    return run_training("sft", version, model_ref, output_dir, cfg, build, on_step=on_step)
