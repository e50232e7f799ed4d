"""A local Hugging Face model: batched generation with the chat template, seeded, label logits kept.

Default model: bundled:smollm2-135m-instruct (runs on CPU). Each batch is seeded from its first
request key, so a re-run of the same batch reproduces it. Prompts of one run share a long head (the
system message: grades, steps, format), so its KV cache is computed once and reused by every batch:
on CPU the prefill of that head is most of the cost of a short answer.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cotgen.backends.base import Backend, Emit, Job, Outcome, SamplingParams, TokenAlternatives
from cotgen.backends.hf_compat import cache_kwargs, cache_of
from cotgen.backends.json_fields import FieldDecoder

TOP_K_ALTERNATIVES = 20
LOGIT_POSITIONS = 32  # enough to pass "Label: <grade>" in a label_first answer
MIN_SHARED_PREFIX = 32  # shorter shared heads are not worth a cache


@dataclass(frozen=True)
class _Row:
    job: Job
    sample_index: int
    key: str


def _stopping_on(stop: threading.Event) -> Any:
    """Stopping criteria that end a `generate` call within one token once `stop` is set (Ctrl-C, SIGTERM)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnEvent()])


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: str, path: str, batch_size: int = 8, device: str = "cpu", threads: int = 0):
        super().__init__(model)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:  # on a CPU shared with other work, fewer threads than cores run faster
            torch.set_num_threads(threads)
        self.torch = torch
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left so generation continues the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        self._prefix: list[int] = []
        self._prefix_cache = None
        self._stop = threading.Event()
        self._stopping = _stopping_on(self._stop)

    def run(self, jobs: Iterator[Job], emit: Emit, stop: threading.Event) -> None:
        self._stop, self._stopping = stop, _stopping_on(stop)
        rows: list[_Row] = []
        for job in jobs:
            if rows and rows[0].job.params != job.params:
                self._generate(rows, emit)  # one batch shares its sampling params
                rows = []
            rows += [_Row(job, index, key) for index, key in job.samples]
            while len(rows) >= self.batch_size:
                self._generate(rows[: self.batch_size], emit)
                rows = rows[self.batch_size:]
            if stop.is_set():
                return
        if rows:
            self._generate(rows, emit)

    def _generate(self, rows: list[_Row], emit: Emit) -> None:
        """One batch; nothing is emitted when `stop` cut it short (its answers are incomplete)."""
        torch = self.torch
        params = rows[0].job.params
        texts = [self.tokenizer.apply_chat_template(list(r.job.messages), tokenize=False, add_generation_prompt=True)
                 for r in rows]
        prompts = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        input_ids, attention_mask, cache = self._batch(prompts)
        torch.manual_seed(int(rows[0].key[:8], 16) ^ (params.seed or 0))
        if params.json_schema is not None:
            self._generate_json(rows, prompts, params, input_ids, attention_mask, cache, emit)
            return
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.lm.generate(input_ids=input_ids, attention_mask=attention_mask, **cache_kwargs(cache),
                                   **self._sampling(params), max_new_tokens=params.max_tokens,
                                   pad_token_id=self.tokenizer.pad_token_id, return_dict_in_generate=True,
                                   output_logits=bool(params.top_logprobs), stopping_criteria=self._stopping)
        latency = time.perf_counter() - started
        if self._stop.is_set():
            return
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        self.stats.count_request()
        for i, row in enumerate(rows):
            generated = out.sequences[i, input_ids.shape[1]:].tolist()
            end = next((j for j, t in enumerate(generated) if t in eos), None)
            ids = generated if end is None else generated[:end]
            emit(Outcome(
                job=row.job, sample_index=row.sample_index, key=row.key,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                finish_reason="length" if end is None else "stop",
                tokens_in=len(prompts[i]), tokens_out=len(ids) + (0 if end is None else 1),
                logprobs=self._alternatives(out.logits, i, ids, params.top_logprobs) if params.top_logprobs else None,
                latency_s=latency,
            ))

    def _generate_json(self, rows: list[_Row], prompts: list[list[int]], params: SamplingParams, input_ids: Any,
                       attention_mask: Any, cache: Any, emit: Emit) -> None:
        started = time.perf_counter()
        decoder = FieldDecoder(self.lm, self.tokenizer, self.torch,
                               {**self._sampling(params), "stopping_criteria": self._stopping})
        decoded = decoder.decode(params.json_schema, input_ids, attention_mask, cache, params.max_tokens)
        latency = time.perf_counter() - started
        if self._stop.is_set():
            return
        self.stats.count_request()
        for row, prompt, answer in zip(rows, prompts, decoded, strict=True):
            emit(Outcome(job=row.job, sample_index=row.sample_index, key=row.key, text=answer.text(),
                         finish_reason="length" if answer.truncated else "stop", tokens_in=len(prompt),
                         tokens_out=answer.tokens_out, latency_s=latency))

    def _batch(self, prompts: list[list[int]]) -> tuple:
        """(input_ids, attention_mask, cache): the shared head (cached) + each prompt's rest, padded in between."""
        torch = self.torch
        shared = _common_prefix(prompts)
        if self._prefix and shared[: len(self._prefix)] == self._prefix:
            shared = self._prefix
        elif len(shared) >= MIN_SHARED_PREFIX:
            with torch.inference_mode():
                head = torch.tensor([shared], device=self.device)
                self._prefix_cache = cache_of(self.lm(input_ids=head, use_cache=True))
            self._prefix = shared
        else:
            shared = []
        width = max(len(p) for p in prompts) - len(shared)
        pad = self.tokenizer.pad_token_id
        ids, mask = [], []
        for p in prompts:
            rest = p[len(shared):]
            gap = width - len(rest)
            ids.append(shared + [pad] * gap + rest)
            mask.append([1] * len(shared) + [0] * gap + [1] * len(rest))
        cache = None
        if shared:
            cache = copy.deepcopy(self._prefix_cache)
            cache.batch_repeat_interleave(len(prompts))
        return (torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device), cache)

    @staticmethod
    def _sampling(params: SamplingParams) -> dict:
        if params.temperature <= 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}

    def _alternatives(self, logits: tuple, row: int, ids: list[int], top: int) -> list[TokenAlternatives]:
        """Top-k of the raw logits (the model's own distribution, before temperature) at the first positions."""
        torch = self.torch
        k = max(top, TOP_K_ALTERNATIVES)
        positions = []
        for step, token_id in enumerate(ids[:LOGIT_POSITIONS]):
            logprobs = torch.log_softmax(logits[step][row].float(), dim=-1)
            values, indices = logprobs.topk(k)
            alternatives = tuple((self.tokenizer.decode([t]), float(v)) for t, v in zip(indices.tolist(), values.tolist(), strict=True))
            positions.append(TokenAlternatives(token=self.tokenizer.decode([token_id]), top=alternatives))
        return positions


def _common_prefix(prompts: list[list[int]]) -> list[int]:
    """The token ids every prompt starts with, leaving each at least one token of its own."""
    first = prompts[0]
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return first[:n]
