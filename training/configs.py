"""One config per trainer: TRL's own config dataclass plus cotgen's fields, with TaoSR-style defaults.

TaoSR1 publishes its recipe (SFT on accepted CoT, DPO on pass@N pairs, GRPO with a correctness reward on
difficulty-filtered, label-balanced prompts) but not every hyperparameter; where it is silent the defaults
follow the common practice of the papers TRL cites (said in each field's help). Overrides (`--set key=value`,
`--config FILE.yaml`, `[training].overrides`) are parsed by transformers' HfArgumentParser against these
dataclasses; cotgen's short names (`batch_size`, `grad_accum`, `epochs`, `warmup`, `group_size`) are argparse
aliases of TRL's fields.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import torch
from transformers import HfArgumentParser
from transformers.training_args import SaveStrategy
from trl import DPOConfig, GRPOConfig, SFTConfig

from schemas.errors import CotgenError
from schemas.sample import STEP_NAMES

GPU = torch.cuda.is_available()
# CPU bf16 autocast is slow and lossy for tiny models: fp32 there, bf16 where the GPU supports it.
BF16 = bool(GPU and torch.cuda.is_bf16_supported())


def _f(default: Any, help: str, alias: str | None = None, factory: Any = None) -> Any:
    """A field with argparse help (and an alias: cotgen's name for a TRL field)."""
    metadata: dict[str, Any] = {"help": help}
    if alias:
        metadata["aliases"] = [f"--{alias}"]
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class CotgenFields:
    """cotgen's fields of every trainer, and the TRL defaults it changes for all three."""

    learning_rate: float = _f(1e-5, "Peak learning rate (AdamW).")
    num_train_epochs: float = _f(2.0, "Passes over the train split; TaoSR1 SFT makes a couple. max_steps > 0 wins.",
                                 "epochs")
    per_device_train_batch_size: int = _f(4, "Rows per device step (GRPO: completions, a multiple of group_size).",
                                          "batch_size")
    gradient_accumulation_steps: int = _f(4, "Device steps per optimiser step.", "grad_accum")
    warmup_steps: float = _f(0.05, "Linear warmup: a float in [0, 1) is a share of the steps, an integer a count.",
                             "warmup")
    max_length: int | None = _f(1024, "SFT/DPO: prompt + answer tokens, longer rows truncated. GRPO ignores it "
                                "(max_completion_length caps its rollouts); accepted so shared overrides apply.")
    seed: int = _f(0, "Random seed (data order, sampling, LoRA init).")
    logging_steps: float = _f(10, "Log the loss every N optimiser steps.")
    save_strategy: SaveStrategy | str = _f("steps", "When to checkpoint: 'steps' (every save_steps), 'epoch', 'no'.")
    save_steps: float = _f(200, "A checkpoint every N steps is what a re-run resumes from.")
    save_total_limit: int | None = _f(2, "Keep at most this many checkpoints (older ones are deleted).")
    save_only_model: bool = _f(not GPU, "Checkpoints hold the weights only, not optimizer/scheduler/RNG state: on by "
                               "default on CPU, where AdamW's state made a checkpoint three times the model (a 5-step "
                               "135M run wrote 2.1 GB). Resuming from one restores weights, step, data position and "
                               "the LR schedule; AdamW's moments restart from zero. Set false for exact resumes.")
    activation_checkpointing: bool | None = _f(None, "Recompute activations to save memory; helps big models, only "
                                               "slows small ones (unset: off).")
    gradient_checkpointing: bool | None = _f(None, "transformers' deprecated name of activation_checkpointing.")
    bf16: bool | None = _f(BF16, "bf16 mixed precision: on by default on a bf16-capable GPU, off on CPU (fp32).")
    use_cpu: bool = _f(not GPU, "Train on the CPU (the default when no GPU is visible).")
    report_to: None | str | list[str] = _f("none", "Logging integrations (wandb, tensorboard, ...); none by default.")
    disable_tqdm: bool | None = _f(True, "TRL's tqdm bars off: cotgen shows its own progress.")
    time_budget_s: float | None = _f(None, "Stop (and save) after the step that crosses this many seconds.")
    lora: bool = _f(False, "Train LoRA adapters (peft); the run directory holds the merged model and adapter/.")
    lora_r: int = _f(16, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA scaling numerator (alpha / r scales the update).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input.")
    lora_target_modules: list[str] = _f(None, "Modules that get adapters (comma-separated with --set).",
                                        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    @property
    def batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def grad_accum(self) -> int:
        return self.gradient_accumulation_steps

    def aliases(self) -> dict[str, str]:
        """cotgen's short name -> TRL's field, as declared in the fields' metadata."""
        return {a.removeprefix("--"): f.name for f in fields(self) for a in f.metadata.get("aliases", [])}

    def to_dict(self) -> dict[str, Any]:
        """TRL's serialisation plus cotgen's short names, so a run manifest answers to either."""
        out = super().to_dict()  # type: ignore[misc]
        return {**out, **{alias: out[name] for alias, name in self.aliases().items()}}


@dataclass
class SFTTrainConfig(CotgenFields, SFTConfig):
    """Stage 1: supervised fine-tuning on accepted CoT; loss on the answer only."""

    completion_only_loss: bool | None = _f(True, "Loss on the answer tokens only, not the prompt.")


@dataclass
class DPOTrainConfig(CotgenFields, DPOConfig):
    """Stage 2: DPO on (correct own sample, wrong own sample) pairs from pass@N."""

    learning_rate: float = _f(5e-7, "DPO moves a tuned model: small steps, as in the DPO/Zephyr recipes.")
    num_train_epochs: float = _f(1.0, "Passes over the preference pairs.", "epochs")
    beta: float = _f(0.1, "DPO's KL strength (the DPO paper's default).")


@dataclass
class GRPOTrainConfig(CotgenFields, GRPOConfig):
    """Stage 3: GRPO on prompts with 0 < c < gamma*G correct rollouts; reward = label correctness + format."""

    learning_rate: float = _f(1e-6, "RL on a tuned model: small steps (DeepSeekMath GRPO).")
    num_train_epochs: float = _f(1.0, "Passes over the prompts.", "epochs")
    per_device_train_batch_size: int = _f(8, "Completions per device step; a multiple of group_size.", "batch_size")
    gradient_accumulation_steps: int = _f(1, "Device steps per optimiser step.", "grad_accum")
    num_generations: int | None = _f(8, "G rollouts per prompt (TaoSR1 samples a group per query to estimate the "
                                     "advantage).", "group_size")
    temperature: float = _f(1.0, "Sample at the policy's own distribution, as pass@N does.")
    top_p: float = _f(1.0, "Nucleus sampling; 1 keeps the whole distribution.")
    beta: float = _f(0.04, "KL coefficient to the reference model (DeepSeekMath GRPO); 0 skips the reference.")
    epsilon: float = _f(0.2, "PPO-style clip.")
    max_completion_length: int | None = _f(384, "Rollout length cap in tokens.")
    loss_type: str = _f("grpo", "TRL's loss formulation; 'grpo' normalises per sequence as DeepSeekMath does.")
    scale_rewards: str = _f("group", "Advantage scaling: 'group' std (GRPO), 'batch' or 'none' (Dr. GRPO).")
    partial_credit: float = _f(0.0, "Reward for an adjacent grade; 0 = exact match only, as TaoSR1.")
    label_weight: float = _f(1.0, "Weight of the label-correctness reward.")
    format_weight: float = _f(0.2, "Weight of the answer-format reward.")
    step_weight: float = _f(0.5, "Weight of TaoSR-SHE's step reward (offline verifier); used only when the version "
                            "has a `steps` set.")

    @property
    def group_size(self) -> int:
        return int(self.num_generations or 0)


@dataclass
class SRPOTrainConfig(GRPOTrainConfig):
    """TaoSR-SHE stage 3 (our design): GRPO with stepwise credit (training/srpo.py).

    Token advantage in a step = the rollout's outcome group advantage + step_lambda * (the step's reward
    normalised across the group); the label line and text outside the credited steps get the outcome advantage
    alone. A step's reward in [-1, 1] is the weighted mean of the judge's verdict (+1 correct, -1 incorrect) and
    the offline verifier (human step marks of the same pair: +/- token F1 to the closest marked step), over the
    sources that gave one.
    """

    step_lambda: float = _f(0.5, "Weight of the normalised step reward added to the outcome advantage of a step's "
                            "tokens; 0 is plain GRPO.")
    judge_weight: float = _f(1.0, "Weight of the generative judge's verdict in a step's reward; 0 ignores the judge.")
    verifier_weight: float = _f(1.0, "Weight of the offline verifier (human step marks of the same pair); 0 ignores "
                                "it.")
    credit_steps: list[str] = _f(None, "Steps that get stepwise credit (comma-separated with --set).",
                                 factory=lambda: list(STEP_NAMES))
    judge_base_url: str | None = _f(None, "OpenAI-compatible judge server, e.g. http://127.0.0.1:8000/v1 (unset: "
                                    "[judge].base_urls of cotgen.toml when its backend is openai; none: verifier only).")
    judge_model: str | None = _f(None, "Model name sent to the judge server (unset: [judge].model).")
    judge_api_key_env: str | None = _f(None, "Environment variable holding the judge server's key (unset: "
                                       "[judge].api_key_env); the key itself is never recorded.")
    judge_workers: int = _f(8, "Concurrent judge requests per batch of rollouts.")
    step_weight: float = _f(0.0, "GRPO's scalar step_agreement reward folded into the outcome; off by default in "
                            "SRPO, whose step credit is per token.")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.credit_steps) - set(STEP_NAMES))
        if unknown:
            raise ValueError(f"credit_steps: {', '.join(unknown)} not among {', '.join(STEP_NAMES)}")


C = TypeVar("C", bound=CotgenFields)


class _ParseError(Exception):
    pass


class _Parser(HfArgumentParser):
    """HfArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> Any:
        raise _ParseError(message)


def _tokens(name: str, value: Any, action: argparse.Action) -> list[str]:
    """One override as argv tokens; list fields take a list or comma-separated text."""
    if action.nargs == "+":
        items = value if isinstance(value, list) else [p.strip() for p in str(value).split(",") if p.strip()]
        return [f"--{name}", *(str(v) for v in items)]
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, dict):
        value = json.dumps(value)  # TRL's dict fields (model_init_kwargs, ...) take JSON text
    return [f"--{name}={value}"]


def _trl_base(cls: type) -> type:
    return next(b for b in cls.__mro__ if b.__module__.startswith("trl."))


def _readable(message: str) -> str:
    """argparse's 'argument --x/--y: invalid int value: 'many'' as 'expected int'."""
    head, _, detail = message.partition(": ")
    if detail.startswith("invalid ") and " value: " in detail:
        return "expected " + detail.removeprefix("invalid ").split(" value: ")[0]
    return detail or head


def parse_config(cls: type[C], sources: list[tuple[str, Mapping[str, Any]]]) -> C:
    """`cls` with each source's {field: value} applied in order (later wins), typed by HfArgumentParser.

    `where` of each source names it in errors ("--set", a YAML path, "cotgen.toml [training].overrides").
    """
    parser = _Parser(cls, allow_abbrev=False)
    actions = {opt.lstrip("-").replace("-", "_"): a for a in parser._actions for opt in a.option_strings}
    argv: list[str] = []
    nulls: dict[str, None] = {}
    for where, items in sources:
        for key, value in items.items():
            name = key.strip().replace("-", "_")
            action = actions.get(name)
            if action is None or action.dest == "help":
                close = difflib.get_close_matches(name, list(actions), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise CotgenError(f"{where} {key}={value}: expected FIELD=VALUE with FIELD one of {cls.__name__}'s "
                                  f"fields (TRL's {_trl_base(cls).__name__} plus cotgen's, training/configs.py){hint}")
            if value is None:
                nulls[action.dest] = None
                continue
            tokens = _tokens(name, value, action)
            try:
                parser.parse_args(tokens)
            except _ParseError as e:
                raise CotgenError(f"{where} {key}={value}: {_readable(str(e))}") from None
            nulls.pop(action.dest, None)
            argv += tokens
    values = {**vars(parser.parse_args(argv)), **nulls}
    try:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.init and f.name in values})
    except (ValueError, TypeError) as e:
        where = ", ".join(w for w, items in sources if items) or "defaults"
        raise CotgenError(f"{cls.__name__} ({where}): {str(e).splitlines()[0]}") from None

