"""vLLM offline inference: `LLM.chat` with `SamplingParams(n=N, logprobs=K)` over chunks of jobs (GPU machines)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from cotgen.backends.base import Backend, Emit, Job, Outcome, SamplingParams, TokenAlternatives
from schemas.errors import CotgenError

CHUNK_JOBS = 256  # vLLM schedules a chunk's requests together; chunks keep the budget and persistence responsive
LOGPROB_POSITIONS = 48
INSTALL_HINT = "backend 'vllm' needs vLLM and a GPU: pip install 'cotgen[vllm]' (or use backend openai against `vllm serve`)"


def require_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise CotgenError(INSTALL_HINT) from None
    return vllm


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, path: str, **engine_args: Any):
        super().__init__(model)
        self.vllm = require_vllm()
        self.llm = self.vllm.LLM(model=path, **engine_args)

    def run(self, jobs: Iterator[Job], emit: Emit, stop: threading.Event) -> None:
        chunk: list[Job] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) >= CHUNK_JOBS:
                self._generate(chunk, emit)
                chunk = []
            if stop.is_set():
                return
        if chunk:
            self._generate(chunk, emit)

    def _sampling(self, params: SamplingParams, n: int, first_index: int) -> Any:
        kwargs: dict[str, Any] = {"n": n, "temperature": params.temperature, "top_p": params.top_p,
                                  "max_tokens": params.max_tokens, "seed": params.sample_seed(first_index)}
        if params.top_logprobs:
            kwargs["logprobs"] = params.top_logprobs
        if params.json_schema is not None:
            kwargs.update(_structured(self.vllm, params.json_schema))
        return self.vllm.SamplingParams(**{**kwargs, **(params.extra or {})})

    def _generate(self, chunk: list[Job], emit: Emit) -> None:
        started = time.perf_counter()
        outputs = self.llm.chat([list(job.messages) for job in chunk],
                                sampling_params=[self._sampling(j.params, len(j.samples), j.samples[0][0]) for j in chunk],
                                use_tqdm=False)
        latency = time.perf_counter() - started
        for job, out in zip(chunk, outputs, strict=True):
            self.stats.count_request()
            for i, ((index, key), completion) in enumerate(zip(job.samples, out.outputs, strict=False)):
                emit(Outcome(
                    job=job, sample_index=index, key=key, text=completion.text, finish_reason=completion.finish_reason,
                    tokens_in=len(out.prompt_token_ids or []) if i == 0 else 0, tokens_out=len(completion.token_ids),
                    logprobs=_alternatives(completion) if job.params.top_logprobs else None, latency_s=latency,
                ))


def _structured(vllm: Any, schema: dict) -> dict[str, Any]:
    """JSON-schema constrained decoding, across the vLLM versions that renamed it."""
    sampling = vllm.sampling_params
    if hasattr(sampling, "StructuredOutputsParams"):
        return {"structured_outputs": sampling.StructuredOutputsParams(json=schema)}
    return {"guided_decoding": sampling.GuidedDecodingParams(json=schema)}


def _alternatives(completion: Any) -> list[TokenAlternatives] | None:
    if not completion.logprobs:
        return None
    positions = []
    for token_id, top in zip(completion.token_ids[:LOGPROB_POSITIONS], completion.logprobs, strict=False):
        chosen = top.get(token_id)
        alternatives = tuple((lp.decoded_token or "", float(lp.logprob)) for lp in top.values())
        positions.append(TokenAlternatives(token=(chosen.decoded_token or "") if chosen else "", top=alternatives))
    return positions
