"""The name transformers gives the KV cache: `cache` from 5.x on, `past_key_values` before (now a warning)."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _cache_name() -> str:
    from transformers.generation import utils  # imported on first use: the CLI starts without transformers

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def cache_kwargs(kv_cache: Any) -> dict[str, Any]:
    """`generate(..., **cache_kwargs(c))` continues from the KV cache `c` under either name."""
    return {_cache_name(): kv_cache}


def cache_of(output: Any) -> Any:
    """The KV cache a forward pass or `generate(return_dict_in_generate=True)` returned."""
    return getattr(output, _cache_name())
