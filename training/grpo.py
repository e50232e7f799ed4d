"""Stage 3: GRPO on an exported `grpo` set through TRL's GRPOTrainer, with cotgen's rewards.

Label correctness and format always; the TaoSR-SHE step reward too when the version has a `steps` set.
"""

from __future__ import annotations

from pathlib import Path

from trl import GRPOTrainer

from training.configs import GRPOTrainConfig
from training.data import ExportedVersion, attach_step_labels
from training.rewards import RewardFunc, format_reward, label_reward, step_reward
from training.runner import RunResult, model_init_kwargs, run_training
from training.trl_args import grpo_args


def grpo_rewards(version: ExportedVersion, cfg: GRPOTrainConfig, with_steps: bool) -> tuple[list[RewardFunc], list[float]]:
    funcs = [label_reward(version.scheme, cfg.partial_credit), format_reward(version.scheme, version.order)]
    weights = [cfg.label_weight, cfg.format_weight]
    if with_steps:
        funcs.append(step_reward(version.scheme))
        weights.append(cfg.step_weight)
    return funcs, weights


def train_grpo(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: GRPOTrainConfig,
               progress: bool = False) -> RunResult:
    train = version.split("grpo", "train")
    with_steps = "steps" in version.kinds and cfg.step_weight > 0
    if with_steps:
        train = attach_step_labels(train, version.split("steps", "train"), version.scheme)
    funcs, weights = grpo_rewards(version, cfg, with_steps)

    def build(model_path, tokenizer, peft_config):
        args = grpo_args(cfg, output_dir, weights)
        args.model_init_kwargs = model_init_kwargs()
        return GRPOTrainer(model=model_path, reward_funcs=funcs, args=args, train_dataset=train,
                           processing_class=tokenizer, peft_config=peft_config)

    extra = {"rewards": [f.__name__ for f in funcs], "reward_weights": weights}
    return run_training("grpo", version, model_ref, output_dir, cfg, build, extra, progress)
