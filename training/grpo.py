"""Stage 3: GRPO on an exported `grpo` set through TRL's GRPOTrainer, with cotgen's rewards.

Label correctness and format always; the TaoSR-SHE step reward too when the version has a `steps` set.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import GRPOTrainer

from schemas.errors import CotgenError
from training.configs import GRPOTrainConfig
from training.data import ExportedVersion, attach_step_labels
from training.rewards import RewardFunc, format_reward, label_reward, step_reward
from training.runner import OnStep, RunResult, run_training, trainer_args


def grpo_rewards(version: ExportedVersion, cfg: GRPOTrainConfig, with_steps: bool) -> tuple[list[RewardFunc], list[float]]:
    funcs = [label_reward(version.scheme, cfg.partial_credit), format_reward(version.scheme, version.order)]
    weights = [cfg.label_weight, cfg.format_weight]
    if with_steps:
        funcs.append(step_reward(version.scheme))
        weights.append(cfg.step_weight)
    return funcs, weights


def grpo_train_set(version: ExportedVersion, cfg: GRPOTrainConfig, with_marks: bool) -> tuple[Dataset, bool]:
    """The `grpo` train split, with the `steps` set's human step marks joined on when asked and there is one."""
    if cfg.reward_weights is not None:
        raise CotgenError("reward_weights: set label_weight, format_weight and step_weight instead (cotgen builds "
                          "TRL's reward_weights from them)")
    train = version.split("grpo", "train")
    with_steps = with_marks and "steps" in version.kinds
    if with_steps:
        train = attach_step_labels(train, version.split("steps", "train"), version.scheme)
    return train, with_steps


def grpo_args(cfg: GRPOTrainConfig, output_dir: Path, weights: list[float]) -> GRPOTrainConfig:
    args = trainer_args(cfg, output_dir)
    args.reward_weights = weights
    return args


def train_grpo(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: GRPOTrainConfig,
               on_step: OnStep | None = None) -> RunResult:
    train, with_steps = grpo_train_set(version, cfg, with_marks=cfg.step_weight > 0)
    funcs, weights = grpo_rewards(version, cfg, with_steps)

    def build(model_path, tokenizer, peft_config):
        return GRPOTrainer(model=model_path, reward_funcs=funcs, args=grpo_args(cfg, output_dir, weights),
                           train_dataset=train, processing_class=tokenizer, peft_config=peft_config)

    extra = {"rewards": [f.__name__ for f in funcs], "reward_weights": weights}
    return run_training("grpo", version, model_ref, output_dir, cfg, build, extra, on_step)
