"""LLM backends behind one interface (`Backend.run(jobs, emit, stop)`): openai, transformers, vllm."""

from __future__ import annotations

from cotgen.backends.base import Backend
from schemas.config import BackendConfig
from schemas.models import resolve_model


def create_backend(config: BackendConfig) -> Backend:
    """The backend `config` names, ready to run (local models are loaded here)."""
    if config.backend == "openai":
        from cotgen.backends.openai import OpenAIBackend, OpenAIOptions

        n_per_request = {"auto": None, "always": True, "never": False}[config.n_per_request]
        return OpenAIBackend(config.model, OpenAIOptions(
            base_urls=config.base_urls, api_key_env=config.api_key_env, concurrency=config.concurrency,
            timeout_s=config.timeout_s, max_retries=config.max_retries, retry_base_s=config.retry_base_s,
            retry_max_s=config.retry_max_s, n_per_request=n_per_request,
            max_response_bytes=int(config.max_response_mb * (1 << 20)),
        ))
    if config.backend == "vllm":
        from cotgen.backends.vllm import VLLMBackend, require_vllm

        require_vllm()  # a clear message before resolving weights when vLLM is missing
        return VLLMBackend(config.model, resolve_model(config.model), seed=config.seed, **config.engine_args)
    from cotgen.backends.transformers import TransformersBackend

    return TransformersBackend(config.model, resolve_model(config.model), batch_size=config.batch_size, device=config.device,
                               threads=config.threads)
