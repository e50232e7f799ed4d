"""One config dataclass per trainer, with TaoSR-style defaults (training.trl_args turns them into TRL's configs).

TaoSR1 publishes its recipe (SFT on accepted CoT, DPO on pass@N pairs, GRPO with a correctness
reward on difficulty-filtered, label-balanced prompts) but not every hyperparameter; where it is
silent the defaults follow the common practice of the papers TRL cites (noted per field).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """What every trainer shares. `max_steps` > 0 overrides `epochs`."""

    learning_rate: float = 1e-5
    epochs: float = 2.0  # TaoSR1 SFT: a couple of passes over the accepted CoT
    max_steps: int = -1
    batch_size: int = 4  # per device
    grad_accum: int = 4
    warmup: float = 0.05  # a float in [0, 1) is a share of the steps, an integer a step count
    weight_decay: float = 0.0
    max_length: int = 1024  # SFT/DPO: prompt + answer tokens, longer rows truncated (GRPO: max_completion_length)
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 200  # a checkpoint every N steps is what a re-run resumes from
    save_total_limit: int = 2
    gradient_checkpointing: bool = False  # saves memory on big models; only slows small ones
    time_budget_s: float | None = None  # stop (and save) after the step that crosses this many seconds
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SFTTrainConfig(TrainConfig):
    """Stage 1: supervised fine-tuning on accepted CoT; loss on the answer only."""

    completion_only_loss: bool = True


@dataclass
class DPOTrainConfig(TrainConfig):
    """Stage 2: DPO on (correct own sample, wrong own sample) pairs from pass@N."""

    learning_rate: float = 5e-7  # DPO moves a tuned model; small steps as in the DPO/Zephyr recipes
    epochs: float = 1.0
    beta: float = 0.1  # DPO's KL strength (the paper's default)
    loss_type: str = "sigmoid"


@dataclass
class GRPOTrainConfig(TrainConfig):
    """Stage 3: GRPO on prompts with 0 < c < gamma*G correct rollouts; reward = label correctness + format."""

    learning_rate: float = 1e-6
    epochs: float = 1.0
    batch_size: int = 8  # completions per device step; a multiple of group_size
    grad_accum: int = 1
    group_size: int = 8  # G rollouts per prompt (TaoSR1 samples a group per query to estimate advantage)
    temperature: float = 1.0  # sample at the policy's own distribution, as pass@N does
    top_p: float = 1.0
    beta: float = 0.04  # KL coefficient to the reference model (DeepSeekMath GRPO); 0 skips the reference
    epsilon: float = 0.2  # PPO-style clip
    max_completion_length: int = 384
    partial_credit: float = 0.0  # reward for an adjacent grade; 0 = exact match only, as TaoSR1
    label_weight: float = 1.0
    format_weight: float = 0.2
    step_weight: float = 0.5  # TaoSR-SHE step reward; used only when the version has a `steps` set
    loss_type: str = "grpo"
    scale_rewards: str = "group"
