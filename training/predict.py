"""Predictions from a causal LM: generate-and-parse, or post-CoT label probabilities (no reasoning decoded).

Label-probability mode appends the answer's opening `Label: ` to the chat prompt and reads the next-token
distribution over the scheme's label ids. Labels spanning several tokens ("L4" may be "L" + "4") are read
where their tokenisations first differ; labels that do not split cleanly there are scored as whole sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from schemas.answer import LABEL_LINE, parse_answer
from schemas.labels import LabelScheme
from schemas.models import resolve_model
from training.runner import load_tokenizer

Progress = Callable[[int], None]


@dataclass
class Prediction:
    pair_id: str
    gold: str
    predicted: str | None
    probs: dict[str, float] | None = None
    label_mass: float | None = None  # probability the model put on any label token before renormalising
    text: str | None = None
    parse_status: str | None = None


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_model(model_ref: str) -> LoadedModel:
    """A model for inference: bf16 on a bf16-capable GPU, fp32 on CPU, left padding for batches."""
    path = resolve_model(model_ref)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to("cuda" if gpu else "cpu").eval()
    return LoadedModel(model, tokenizer, path)


def chat_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


@torch.inference_mode()
def generate_predictions(lm: LoadedModel, rows: list[dict[str, Any]], scheme: LabelScheme, max_new_tokens: int,
                         batch_size: int = 8, progress: Progress | None = None) -> list[Prediction]:
    """Greedy answers, parsed with the shared parser; an answer without a label predicts None."""
    out = []
    for batch in _batches(rows, batch_size):
        texts = [chat_text(lm.tokenizer, r["prompt"]) for r in batch]
        enc = lm.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
        generated = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=lm.tokenizer.pad_token_id)
        answers = lm.tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for row, answer in zip(batch, answers, strict=True):
            parsed = parse_answer(answer, scheme)
            out.append(Prediction(row["pair_id"], row["label"], parsed.label, text=answer, parse_status=parsed.status))
        if progress:
            progress(len(batch))
    return out


@dataclass(frozen=True)
class LabelReading:
    """How one prompt's label distribution is read: a shared prefix, then one distinct token per label."""

    prefix: list[int]
    next_token: dict[str, int] | None  # None: the labels do not split on one token; score whole sequences
    continuations: dict[str, list[int]]


def _common_prefix(seqs: dict[str, list[int]]) -> int:
    shortest = min(len(s) for s in seqs.values())
    common = 0
    while common < shortest and len({s[common] for s in seqs.values()}) == 1:
        common += 1
    return common


def label_reading(tokenizer: PreTrainedTokenizerBase, prompt_text: str, scheme: LabelScheme) -> LabelReading:
    """Tokenise prompt + `Label: <id>` for every label together, so merges across the boundary come out right.

    When one label's tokens are a prefix of another's ("Good" / "Goodish"), the label line's newline is
    scored too, so each label is a complete sequence and the sequence scores form a distribution.
    """
    def encode(suffix: str) -> dict[str, list[int]]:
        return {g: tokenizer(prompt_text + LABEL_LINE.format(label=g) + suffix, add_special_tokens=False)["input_ids"]
                for g in scheme.ids}

    seqs = encode("")
    common = _common_prefix(seqs)
    firsts = {g: s[common] for g, s in seqs.items() if len(s) > common}
    if len(firsts) == len(seqs) and len(set(firsts.values())) == len(seqs):
        return LabelReading(seqs[scheme.ids[0]][:common], firsts, {g: s[common:] for g, s in seqs.items()})
    seqs = encode("\n")
    common = _common_prefix(seqs)
    return LabelReading(seqs[scheme.ids[0]][:common], None, {g: s[common:] for g, s in seqs.items()})


def _left_pad(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def _next_token_logprobs(lm: LoadedModel, seqs: list[list[int]]) -> torch.Tensor:
    ids, mask = _left_pad(seqs, lm.tokenizer.pad_token_id, lm.device)
    logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, -1, :]
    return torch.log_softmax(logits.float(), dim=-1)


def _sequence_logprob(lm: LoadedModel, prefix: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([prefix + continuation], device=lm.device)
    logprobs = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
    start = len(prefix)
    return sum(logprobs[start + i - 1, tok].item() for i, tok in enumerate(continuation))


def _normalise(logprobs: dict[str, float]) -> tuple[dict[str, float], float]:
    values = torch.tensor(list(logprobs.values()))
    mass = float(values.exp().sum())
    probs = torch.softmax(values, dim=0).tolist()
    return dict(zip(logprobs, probs, strict=True)), mass


@torch.inference_mode()
def label_prob_predictions(lm: LoadedModel, rows: list[dict[str, Any]], scheme: LabelScheme, batch_size: int = 8,
                           progress: Progress | None = None) -> list[Prediction]:
    """P(label) at the label position, renormalised over the scheme's labels; the prediction is the argmax."""
    out = []
    for batch in _batches(rows, batch_size):
        readings = [label_reading(lm.tokenizer, chat_text(lm.tokenizer, r["prompt"]), scheme) for r in batch]
        quick = [i for i, rd in enumerate(readings) if rd.next_token is not None]
        scored: dict[int, dict[str, float]] = {}
        if quick:
            logprobs = _next_token_logprobs(lm, [readings[i].prefix for i in quick])
            for row_logprobs, i in zip(logprobs, quick, strict=True):
                scored[i] = {g: row_logprobs[t].item() for g, t in readings[i].next_token.items()}
        for i, rd in enumerate(readings):
            if i not in scored:
                scored[i] = {g: _sequence_logprob(lm, rd.prefix, c) for g, c in rd.continuations.items()}
        for i, row in enumerate(batch):
            probs, mass = _normalise(scored[i])
            best = max(scheme.ids, key=lambda g: probs[g])
            out.append(Prediction(row["pair_id"], row["label"], best, probs=probs, label_mass=mass))
        if progress:
            progress(len(batch))
    return out
