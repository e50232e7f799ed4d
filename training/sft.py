"""Stage 1: SFT on an exported `sft` set through TRL's SFTTrainer (prompt/completion, loss on the answer)."""

from __future__ import annotations

from pathlib import Path

from trl import SFTTrainer

from training.configs import SFTTrainConfig
from training.data import ExportedVersion, training_columns
from training.runner import RunResult, model_init_kwargs, run_training
from training.trl_args import sft_args


def train_sft(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: SFTTrainConfig,
               progress: bool = False) -> RunResult:
    train = training_columns(version.split("sft", "train"), "sft")

    def build(model_path, tokenizer, peft_config):
        args = sft_args(cfg, output_dir)
        args.model_init_kwargs = model_init_kwargs()
        return SFTTrainer(model=model_path, args=args, train_dataset=train, processing_class=tokenizer,
                          peft_config=peft_config)

    return run_training("sft", version, model_ref, output_dir, cfg, build, progress=progress)
