"""Stage 2: DPO on an exported `dpo` set (chosen = a correct sample, rejected = a wrong one) through TRL's DPOTrainer."""

from __future__ import annotations

from pathlib import Path

from trl import DPOTrainer

from training.configs import DPOTrainConfig
from training.data import ExportedVersion, training_columns
from training.runner import RunResult, model_init_kwargs, run_training
from training.trl_args import dpo_args


def train_dpo(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: DPOTrainConfig,
               progress: bool = False) -> RunResult:
    train = training_columns(version.split("dpo", "train"), "dpo")

    def build(model_path, tokenizer, peft_config):
        args = dpo_args(cfg, output_dir)
        args.model_init_kwargs = model_init_kwargs()
        return DPOTrainer(model=model_path, args=args, train_dataset=train, processing_class=tokenizer,
                          peft_config=peft_config)

    return run_training("dpo", version, model_ref, output_dir, cfg, build, progress=progress)
