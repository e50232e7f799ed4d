"""cotgen's trainer configs as TRL's own config objects, with the precision the hardware allows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, SFTConfig

from training.configs import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig, TrainConfig


def precision() -> dict[str, Any]:
    """bf16 where a GPU supports it, full fp32 elsewhere (CPU bf16 autocast is slow and lossy for tiny models)."""
    gpu = torch.cuda.is_available()
    return {"bf16": bool(gpu and torch.cuda.is_bf16_supported()), "use_cpu": not gpu}


# transformers 5 renamed gradient checkpointing; the old name still works but warns on every run.
CHECKPOINTING = "activation_checkpointing" if hasattr(TrainingArguments, "activation_checkpointing") else "gradient_checkpointing"


def _common(cfg: TrainConfig, output_dir: Path) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "warmup_steps": cfg.warmup,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        CHECKPOINTING: cfg.gradient_checkpointing,
        "report_to": "none",
        "disable_tqdm": True,
        **precision(),
    }


def sft_args(cfg: SFTTrainConfig, output_dir: Path) -> SFTConfig:
    return SFTConfig(**_common(cfg, output_dir), max_length=cfg.max_length,
                     completion_only_loss=cfg.completion_only_loss)


def dpo_args(cfg: DPOTrainConfig, output_dir: Path) -> DPOConfig:
    return DPOConfig(**_common(cfg, output_dir), max_length=cfg.max_length, beta=cfg.beta, loss_type=[cfg.loss_type])


def grpo_args(cfg: GRPOTrainConfig, output_dir: Path, reward_weights: list[float]) -> GRPOConfig:
    return GRPOConfig(
        **_common(cfg, output_dir),
        num_generations=cfg.group_size,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        max_completion_length=cfg.max_completion_length,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=reward_weights,
    )
