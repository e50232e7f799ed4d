"""SRPO: GRPO with stepwise credit, TaoSR-SHE's step rewards folded into per-token advantages (our design).

TaoSR-SHE (arXiv 2510.07972) rewards reasoning steps with a generative step judge and human step marks (an
offline verifier); its formulas are not public. Ours, for rollout i of a group G (the rollouts of one prompt)
and its step j, the steps and their token spans found with schemas.answer's parser:

    r_ij = weighted mean of judge_ij in {-1, +1} (judge_weight) and verifier_ij in [-1, 1] (verifier_weight),
           over the sources that gave one (none: the step gets no step credit)
    z_ij = (r_ij - mean_G r) / (std_G r + 1e-4), pooled over every rewarded step of the group's rollouts
    A_it = A_i + step_lambda * z_ij  for the tokens t of step j (steps in credit_steps); A_i for every other token

A_i is TRL's outcome advantage (label correctness + format, normalised in the group), so the label line gets
it alone. A step judged wrong in an otherwise correct rollout gets less than its rollout's other steps: that is
where the credit goes. The verifier scores a rollout step against the human-marked steps of the same name for
the same pair: +F1 to the closest step marked right, -F1 to the closest marked wrong (token F1).

`training` never imports `cotgen`: the judge is any `StepJudge` callable, built by the application layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from schemas.answer import parse_answer
from schemas.labels import LabelScheme
from schemas.sample import Step
from training.configs import SRPOTrainConfig
from training.data import STEP_LABELS, STEP_NAMES_COL, STEP_TEXTS, ExportedVersion
from training.grpo import grpo_args, grpo_rewards, grpo_train_set
from training.rewards import token_f1
from training.runner import OnStep, RunResult, run_training

FORMULA = ("A_it = A_i + step_lambda * z_ij for tokens t of step j (A_i elsewhere); "
           "z_ij = (r_ij - mean_G r) / (std_G r + 1e-4) over the group's rewarded steps; "
           "r_ij = weighted mean of judge (+1 correct / -1 incorrect) and verifier (+/- token F1 to human-marked steps)")
EPS = 1e-4


@dataclass(frozen=True)
class StepJudgeRequest:
    """One rollout to judge: the policy prompt, its pair and gold label, its own label and its steps."""

    prompt: Any
    pair_id: str | None
    label: str | None
    predicted: str | None
    steps: list[Step]


class StepJudge(Protocol):
    """Grades the steps of each rollout: per step a reward in [-1, 1], or None where it gave no verdict."""

    def __call__(self, requests: Sequence[StepJudgeRequest]) -> list[list[float | None]]: ...


@dataclass(frozen=True)
class StepCredit:
    """One step of one rollout: its completion-token range [start, end), reward and group-normalised reward."""

    name: str
    start: int
    end: int
    reward: float | None
    z: float = 0.0


def token_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The text of `ids` and each token's [start, end) character range in it (special tokens are empty)."""
    pieces = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    offsets, at = [], 0
    for piece in pieces:
        offsets.append((at, at + len(piece)))
        at += len(piece)
    return "".join(pieces), offsets


def step_spans(text: str, steps: Sequence[Step]) -> list[tuple[int, int] | None]:
    """Each parsed step's character span in `text`: from the start of the line holding its first words (so its
    header counts) to the end of its last words; None when its text cannot be found."""
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for step in steps:
        lines = [line.strip() for line in step.text.splitlines() if line.strip()]
        first = text.find(lines[0], cursor) if lines else -1
        if first < 0:
            spans.append(None)
            continue
        end = first
        for line in lines:
            at = text.find(line, end)
            if at < 0:
                break
            end = at + len(line)
        spans.append((text.rfind("\n", 0, first) + 1, end))
        cursor = end
    return spans


def token_range(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> tuple[int, int] | None:
    """The tokens overlapping a character span, as [first, last + 1)."""
    hit = [k for k, (s, e) in enumerate(offsets) if s < span[1] and e > span[0]]
    return (hit[0], hit[-1] + 1) if hit else None


def verifier_rewards(steps: Sequence[Step], marks: Sequence[tuple[str, str, bool]]) -> list[float | None]:
    """Per step: +F1 to the closest human step of its name marked right, -F1 to one marked wrong; None unmarked."""
    out: list[float | None] = []
    for step in steps:
        refs = [(token_f1(step.text, text), ok) for name, text, ok in marks if name == step.name]
        if not refs:
            out.append(None)
            continue
        similarity, ok = max(refs)
        out.append(similarity if ok else -similarity)
    return out


def combine(judge: float | None, verifier: float | None, judge_weight: float, verifier_weight: float) -> float | None:
    """Weighted mean of the sources that gave a reward (a zero weight switches a source off)."""
    given = [(w, r) for w, r in ((judge_weight, judge), (verifier_weight, verifier)) if r is not None and w > 0]
    total = sum(w for w, _ in given)
    return sum(w * r for w, r in given) / total if total else None


def normalise_in_groups(rewards: list[list[float | None]], group: int) -> list[list[float]]:
    """z of every step reward against the rewarded steps of its group (`group` consecutive rollouts); 0 for None."""
    out: list[list[float]] = []
    for g in range(0, len(rewards), group):
        block = rewards[g:g + group]
        values = torch.tensor([r for row in block for r in row if r is not None], dtype=torch.float64)
        mean = values.mean().item() if len(values) else 0.0
        std = values.std().item() if len(values) > 1 else 0.0
        out += [[0.0 if r is None else (r - mean) / (std + EPS) for r in row] for row in block]
    return out


def token_advantages(outcome: torch.Tensor, credits: Sequence[Sequence[StepCredit]], length: int,
                     step_lambda: float) -> torch.Tensor:
    """(B, T) advantages: the outcome advantage everywhere, plus step_lambda * z over each credited step's tokens."""
    advantages = outcome.unsqueeze(1).repeat(1, length)
    for i, row in enumerate(credits):
        for c in row:
            advantages[i, c.start:c.end] += step_lambda * c.z
    return advantages


class SRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are per token (B, T): TRL's outcome advantage plus stepwise credit.

    TRL's `_compute_loss` takes advantages of shape (B,) or (B, T); this subclass replaces the (B,) tensor
    `_generate_and_score_completions` returns. `last_credit` and `last_advantages` keep the local batch's steps
    and (B, T) advantages, for inspection.
    """

    def __init__(self, *args: Any, scheme: LabelScheme, step_judge: StepJudge | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheme = scheme
        self.step_judge = step_judge
        self.last_credit: list[list[StepCredit]] = []
        self.last_advantages: torch.Tensor | None = None

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        cfg: SRPOTrainConfig = self.args  # type: ignore[assignment]
        ids, mask = output["completion_ids"], output["completion_mask"]
        rollouts = []
        for row, mask_row in zip(ids.tolist(), mask.tolist(), strict=True):
            text, offsets = token_offsets(self.processing_class, row[:int(sum(mask_row))])
            parsed = parse_answer(text, self.scheme)
            rollouts.append((text, offsets, parsed))
        rewards = self._step_rewards(inputs, rollouts, cfg)
        # Groups may straddle processes: normalise over the gathered batch, then keep this process's slice.
        everyone = gather_object(rewards)
        z_all = normalise_in_groups(everyone, self.num_generations)
        start = self.accelerator.process_index * len(inputs)
        z = z_all[start:start + len(inputs)]
        self.last_credit = []
        for (text, offsets, parsed), row_r, row_z in zip(rollouts, rewards, z, strict=True):
            credit = []
            for step, span, r, zz in zip(parsed.steps, step_spans(text, parsed.steps), row_r, row_z, strict=True):
                tokens = token_range(offsets, span) if span else None
                if tokens and step.name in cfg.credit_steps:
                    credit.append(StepCredit(step.name, tokens[0], tokens[1], r, zz if r is not None else 0.0))
            self.last_credit.append(credit)
        output["advantages"] = token_advantages(output["advantages"], self.last_credit, ids.shape[1], cfg.step_lambda)
        self.last_advantages = output["advantages"].detach().cpu()
        self._log_credit(rewards)
        return output

    def _step_rewards(self, inputs: list[dict[str, Any]], rollouts: list[tuple[str, Any, Any]],
                      cfg: SRPOTrainConfig) -> list[list[float | None]]:
        """Per rollout, per parsed step: the judge's and the verifier's rewards combined."""
        judged: list[list[float | None]] = [[None] * len(p.steps) for _, _, p in rollouts]
        if self.step_judge is not None and cfg.judge_weight > 0:
            asked = [i for i, (_, _, p) in enumerate(rollouts) if p.steps]
            requests = [StepJudgeRequest(prompt=inputs[i]["prompt"], pair_id=inputs[i].get("pair_id"),
                                         label=inputs[i].get("label"), predicted=rollouts[i][2].label,
                                         steps=list(rollouts[i][2].steps)) for i in asked]
            for i, verdicts in zip(asked, self.step_judge(requests) if requests else [], strict=True):
                judged[i] = (list(verdicts) + [None] * len(judged[i]))[:len(judged[i])]
        out = []
        for row, (_, _, parsed), from_judge in zip(inputs, rollouts, judged, strict=True):
            marks = list(zip(row.get(STEP_NAMES_COL) or [], row.get(STEP_TEXTS) or [], row.get(STEP_LABELS) or [],
                             strict=True))
            verified = verifier_rewards(parsed.steps, marks)
            out.append([combine(j, v, cfg.judge_weight, cfg.verifier_weight)
                        for j, v in zip(from_judge, verified, strict=True)])
        return out

    def _log_credit(self, rewards: list[list[float | None]]) -> None:
        given = [r for row in rewards for r in row if r is not None]
        steps = sum(len(row) for row in rewards)
        metrics = self._metrics["train"]
        metrics["srpo/steps_per_rollout"].append(steps / max(len(rewards), 1))
        metrics["srpo/steps_rewarded"].append(len(given) / steps if steps else 0.0)
        metrics["srpo/step_reward_mean"].append(sum(given) / len(given) if given else 0.0)


def train_srpo(version: ExportedVersion, model_ref: str, output_dir: Path, cfg: SRPOTrainConfig,
               step_judge: StepJudge | None = None, judge_info: dict[str, Any] | None = None,
               on_step: OnStep | None = None) -> RunResult:
    """SRPO on the `grpo` set: outcome rewards (label + format) plus stepwise credit from the judge and/or the
    human step marks of the `steps` set; the manifest records the formula and the judge."""
    train, with_marks = grpo_train_set(version, cfg, with_marks=cfg.verifier_weight > 0 or cfg.step_weight > 0)
    funcs, weights = grpo_rewards(version, cfg, with_steps=with_marks and cfg.step_weight > 0)

    def build(model_path, tokenizer, peft_config):
        return SRPOTrainer(model=model_path, reward_funcs=funcs, args=grpo_args(cfg, output_dir, weights),
                           train_dataset=train, processing_class=tokenizer, peft_config=peft_config,
                           scheme=version.scheme, step_judge=step_judge)

    extra = {"rewards": [f.__name__ for f in funcs], "reward_weights": weights,
             "srpo": {"formula": FORMULA, "step_lambda": cfg.step_lambda, "credit_steps": list(cfg.credit_steps),
                      "judge": judge_info if step_judge is not None and cfg.judge_weight > 0 else None,
                      "judge_weight": cfg.judge_weight, "verifier_weight": cfg.verifier_weight,
                      "verifier": "human step marks of the version's `steps` set"
                      if with_marks and cfg.verifier_weight > 0 else None}}
    return run_training("srpo", version, model_ref, output_dir, cfg, build, extra, on_step)
