"""Seconds per optimiser step of SFT, GRPO and SRPO with SmolLM2-135M on this CPU, and a run's disk use.

Data: real CrowdFlower pairs exported in the export layout with template answers (tests/helpers_training.py).
GRPO and SRPO run twice: with rollouts sampled from the model (the real cost; SmolLM2 rarely writes parsable
steps, so SRPO's judge is seldom asked) and with fixed well-formed rollouts (no generation; every rollout has
five steps, so SRPO's parsing, judge requests and per-token advantages are all paid). SRPO's judge is a
loopback OpenAI-compatible server answering at once: the figure is SRPO's own overhead, not a judge model's.

    python bench/train.py                  # 3 steps each, batch 4, group 4, 48-token rollouts
    python bench/train.py --steps 5 --completion-length 96
    python bench/train.py --skip-sft --rollouts fixed --steps 2   # SRPO's own overhead only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from datasets import disable_progress_bars  # noqa: E402
from helpers_training import SCHEME, LoopbackJudge, answer, crowdflower_pairs, split_by_query, write_export  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from cotgen.app.train import ServerStepJudge  # noqa: E402
from cotgen.judge import load_judge_prompt  # noqa: E402
from schemas.datasets import DatasetRef  # noqa: E402
from schemas.models import resolve_model  # noqa: E402
from schemas.pair import Pair  # noqa: E402
from training.configs import GRPOTrainConfig, SFTTrainConfig, SRPOTrainConfig  # noqa: E402
from training.data import ExportedVersion, open_version  # noqa: E402
from training.runner import disk_use, load_tokenizer  # noqa: E402

MODEL = "bundled:smollm2-135m-instruct"
JUDGED = {"query_understanding": "correct", "item_understanding": "correct", "category_matching": "incorrect",
          "attribute_matching": "correct", "relevance_judgement": "correct"}
disable_progress_bars()
hf_logging.disable_progress_bar()


def per_step(runtime: float, steps: int) -> str:
    return f"{runtime / max(steps, 1):.2f} s/step"


def fixed_rollouts(version: ExportedVersion, tokenizer, pairs: dict[str, dict]):
    """A rollout_func: every other rollout answers the gold label, the rest a wrong one; five steps each."""
    from helpers_training import wrong_label

    by_prompt = {json.dumps(r["prompt"]): r["pair_id"] for r in version.split("grpo", "train")}

    def rollouts(prompts: list, trainer: object) -> dict:
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": []}
        for i, prompt in enumerate(prompts):
            pair = pairs[by_prompt[json.dumps(prompt)]]
            label = pair["label"] if i % 2 == 0 else wrong_label(pair["label"])
            text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            out["prompt_ids"].append(tokenizer(text, add_special_tokens=False)["input_ids"])
            out["completion_ids"].append(tokenizer(answer(pair, label, version.order), add_special_tokens=False)
                                         ["input_ids"] + [tokenizer.eos_token_id])
        return {**out, "logprobs": None}

    return rollouts


def rl_trainer(kind: str, version: ExportedVersion, cfg: GRPOTrainConfig, out: Path, judge, rollout_func=None):
    from trl import GRPOTrainer

    from training.grpo import grpo_args, grpo_rewards, grpo_train_set
    from training.srpo import SRPOTrainer

    train, _ = grpo_train_set(version, cfg, with_marks=False)
    funcs, weights = grpo_rewards(version, cfg, with_steps=False)
    path = resolve_model(MODEL)
    common = {"model": path, "reward_funcs": funcs, "args": grpo_args(cfg, out, weights), "train_dataset": train,
              "processing_class": load_tokenizer(path), "rollout_func": rollout_func}
    if kind == "srpo":
        return SRPOTrainer(**common, scheme=version.scheme, step_judge=judge)
    return GRPOTrainer(**common)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--completion-length", type=int, default=48)
    ap.add_argument("--skip-sft", action="store_true", help="RL figures only")
    ap.add_argument("--rollouts", choices=["sampled", "fixed", "both"], default="both")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "crowdflower" / "train_dev.csv")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cotgen-bench-train-"))
    pairs_list = crowdflower_pairs(args.data, limit=200, seed=0)
    write_export(work / "datasets", "cf", split_by_query(pairs_list))
    version = open_version(work / "datasets", DatasetRef("cf"))
    pairs = {p["pair_id"]: p for p in pairs_list}
    tokenizer = load_tokenizer(resolve_model(MODEL))
    print(f"SmolLM2-135M on CPU, {args.steps} steps each, batch {args.batch_size}; RL: group {args.group_size}, "
          f"rollouts up to {args.completion_length} tokens; {len(version.split('grpo', 'train'))} GRPO prompts")

    from training.sft import train_sft

    for only_model in () if args.skip_sft else (True, False):
        sft_cfg = SFTTrainConfig(max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                                 gradient_accumulation_steps=1, max_length=256, save_steps=1, logging_steps=1,
                                 save_only_model=only_model)
        out = work / "runs" / f"sft-{'model-only' if only_model else 'full'}"
        started = time.monotonic()
        sft = train_sft(version, MODEL, out, sft_cfg)
        print(f"SFT ({sft.checkpoints} checkpoints) {per_step(sft.train_metrics['train_runtime'], sft.global_step)} "
              f"(wall {time.monotonic() - started:.0f}s with loading); run directory with a checkpoint every step, "
              f"{sft_cfg.save_total_limit} kept: {disk_use(out) / 1e9:.2f} GB")

    rl = {"per_device_train_batch_size": args.batch_size, "num_generations": args.group_size, "beta": 0.0,
          "max_completion_length": args.completion_length, "max_steps": args.steps, "save_strategy": "no",
          "logging_steps": 1}
    judge_pairs = {pid: Pair(pair_id=pid, source="crowdflower", query=p["query"], title=p["title"],
                             description=p["description"], label=p["label"], scheme=SCHEME.name)
                   for pid, p in pairs.items()}
    with LoopbackJudge(JUDGED) as server:
        from openai import OpenAI

        judge = ServerStepJudge(OpenAI(base_url=server.base_url, api_key="EMPTY"), "judge", load_judge_prompt(),
                                judge_pairs, {}, version.scheme, structured=True, show_gold=True, max_tokens=200, workers=8)
        for rollouts in ("sampled", "fixed") if args.rollouts == "both" else (args.rollouts,):
            for kind, cls in (("grpo", GRPOTrainConfig), ("srpo", SRPOTrainConfig)):
                cfg = cls(**rl)
                func = fixed_rollouts(version, tokenizer, pairs) if rollouts == "fixed" else None
                trainer = rl_trainer(kind, version, cfg, work / "runs" / f"{kind}-{rollouts}", judge, func)
                trainer.remove_callback(PrinterCallback)
                asked = len(server.requests)
                output = trainer.train()
                extra = f"; judge requests {len(server.requests) - asked}" if kind == "srpo" else ""
                print(f"{kind.upper():4} {rollouts:7} {per_step(output.metrics['train_runtime'], trainer.state.global_step)}"
                      f"{extra}")
    print(f"workdir {work}")


if __name__ == "__main__":
    main()
