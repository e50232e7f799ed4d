"""The typed model of `cotgen.toml`; one section per package, loaded and validated in one place."""

from __future__ import annotations

import codecs
import sys
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from schemas.datasets import check_dataset_name
from schemas.errors import CotgenError, read_text, require_file
from schemas.labels import BUILTIN_SCHEMES, LabelScheme, resolve_scheme

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILE = "cotgen.toml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ColumnMap(Section):
    """Which column of the source file holds each field of a pair.

    `id` is the source's own record id: when mapped it joins the pair hash, so repeated judgements of the
    same text stay separate pairs; unmapped, rows with the same text collapse into one pair.
    """

    id: str | None = None
    query: str = "query"
    title: str = "title"
    description: str | None = None
    label: str = "label"
    attributes: list[str] = Field(default_factory=list)


class SourceConfig(Section):
    """A file of labelled pairs and how to read it."""

    name: str
    path: str
    scheme: str = "taosr4"
    format: Literal["auto", "csv", "tsv", "parquet", "jsonl", "hf"] = "auto"
    split: str | None = Field(default=None, description="a saved DatasetDict (format hf): ingest only this split")
    encoding: str = "utf-8"
    strip_html: bool = False
    skip_bad: bool = Field(default=False, description="send bad rows to a rejects file instead of stopping")
    columns: ColumnMap = Field(default_factory=ColumnMap)

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, v: str) -> str:
        try:
            codec = codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding '{v}'") from None
        # rot13, base64, zlib ... are codecs too, but they do not turn bytes into text.
        if not getattr(codec, "_is_text_encoding", True):
            raise ValueError(f"'{v}' is not a text encoding (e.g. utf-8, latin-1, cp1252, utf-16)")
        return v


class IndexConfig(Section):
    """The rule index: which documents, which embedder, which FAISS index."""

    name: str = "rules"
    embedder: str = "bundled:all-minilm-l6-v2"
    rules: list[str] = Field(default_factory=lambda: ["builtin"])
    kind: Literal["auto", "exact", "hnsw", "ivf"] = "auto"
    k: int = Field(default=5, ge=1)
    query_template: str = "query: {query} | item: {title} {attributes}"
    # FAISS parameters by kind (hnsw: M, ef_construction, ef_search; ivf: nlist, nprobe); recorded in the manifest.
    params: dict[str, int] = Field(default_factory=dict)
    approx_above: int = Field(default=50_000, ge=0)  # kind "auto": exact up to this many documents, HNSW above
    device: str = "auto"  # embedder device: auto | cpu | cuda | mps
    batch_size: int = Field(default=32, ge=1)  # texts per forward pass; 32 is fastest on CPU (bench/retrieval.py)


class BackendConfig(Section):
    """An LLM that writes answers: the teacher (stage 1) or the policy being trained (stages 2-3)."""

    backend: Literal["openai", "transformers", "vllm"] = "transformers"
    model: str = "bundled:smollm2-135m-instruct"
    base_urls: list[str] = Field(default_factory=list)
    api_key_env: str = "OPENAI_API_KEY"
    n: int = Field(default=1, ge=1)
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=384, ge=1)
    concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    order: Literal["cot_first", "label_first"] = "cot_first"
    explain_gold: bool = False
    structured: bool = False
    seed: int = 0
    batch_size: int = Field(default=8, ge=1)
    prompt: str = "latest"  # a shipped version ("v1") or a path to a .j2 template with system and user blocks
    top_logprobs: int = Field(default=20, ge=0, le=20)  # label_first answers: alternatives kept at the label position
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    n_per_request: Literal["auto", "always", "never"] = "auto"  # auto: try `n`, fall back if the server ignores it
    device: str = "cpu"  # transformers backend: cpu, cuda, cuda:0, mps
    threads: int = Field(default=0, ge=0)  # transformers backend: torch CPU threads (0: torch's default)
    engine_args: dict[str, str | int | float | bool] = Field(default_factory=dict)  # vllm backend: LLM(**engine_args)
    extra_body: dict[str, Any] = Field(default_factory=dict, description=(
        "extra request fields sent with every request (chat_template_kwargs, reasoning_effort, top_k, ...); "
        "vllm backend: extra SamplingParams; part of the request key when set"))
    max_response_mb: float = Field(default=4.0, gt=0, description=(
        "openai backend: a bigger response body is an 'oversize' failure, retried like one"))

    @field_validator("base_urls")
    @classmethod
    def _no_credentials(cls, urls: list[str]) -> list[str]:
        # A key in a URL would be stored with the run's parameters; keys come from the environment only.
        for url in urls:
            parts = urlsplit(url)
            if parts.username is not None or parts.password is not None:
                shown = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
                raise PydanticCustomError(
                    "url_credentials", "{url} holds credentials; put the key in the environment variable that "
                    "api_key_env names instead", {"url": shown})
        return urls


class JudgeConfig(BackendConfig):
    """The generative step judge (`cotgen judge`): a backend like the teacher's plus what it judges.

    Defaults suit grading: greedy decoding, JSON verdicts (one reason and one verdict per step). `order`,
    `explain_gold` and `top_logprobs` of the backend settings do not apply to the judge.
    """

    temperature: float = Field(default=0.0, ge=0.0)
    max_tokens: int = Field(default=200, ge=1, description="one judge answer; structured: shared by the step reasons")
    structured: bool = Field(default=True, description="ask for the JSON verdict schema (tolerant text parsing otherwise)")
    samples: Literal["teacher", "policy"] = Field(default="teacher", description="judge the CoTs of these runs")
    runs: list[str] = Field(default_factory=list, description="generation runs to judge; empty: every run of `samples`")
    show_gold: bool = Field(default=True, description="show the judge the pair's gold label")


class DifficultyBins(Section):
    """TaoSR1's difficulty from c, the clean right answers (parsed ok, label = gold) of a pair's n samples.

    unsolved: c = 0; easy: c >= easy * n; hard: 0 < c <= gamma * n; medium: the rest (checked in that order).
    GRPO keeps 0 < c < gamma * n (TaoSR1's window: with n = 4 and gamma = 0.5, c = 1 only).
    """

    gamma: float = Field(default=0.5, gt=0.0, le=1.0)
    easy: float = Field(default=1.0, gt=0.0, le=1.0)


class CurationConfig(Section):
    """Which samples become training rows (TaoSR1 / TaoSR-SHE selection knobs)."""

    seed: int = 0
    difficulty: DifficultyBins = Field(default_factory=DifficultyBins)
    split: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    teacher_runs: list[str] = Field(default_factory=list, description="teacher run names for SFT; empty: all")
    policy_run: str | None = Field(default=None, description="policy run for DPO/GRPO; unset: the latest")
    sft_per_pair: int = Field(default=1, ge=1)
    sft_min_chars: int = Field(default=0, ge=0)
    sft_max_chars: int = Field(default=8000, ge=1)
    sft_drop_wrong_steps: bool = Field(
        default=False, description="keep out of SFT unreviewed teacher CoTs with the right label but a step labelled "
                                   "wrong (a reviewer's mark, else the step judge's verdict)")
    sft_balance: float | None = Field(default=None, ge=1.0,
                                      description="cap train-split SFT rows per label, x the rarest; unset: the natural mix")
    dpo_per_pair: int = Field(default=1, ge=1)
    dpo_teacher_fallback: bool = True
    grpo_balance: float | None = Field(default=1.0, ge=1.0, description="cap per label, x the rarest; unset: no cap")
    diversity_threshold: float | None = Field(default=None, gt=0.0, le=1.0, description="cosine; unset: off")
    diversity_scope: Literal["pair", "global"] = "pair"
    drop_truncated: bool = Field(default=True, description=(
        "never train on answers cut at max_tokens (finish_reason = length): no SFT row, no DPO chosen"))
    repetition_ngram: int = Field(default=3, ge=1, description="word n-gram length the repetition gate counts")
    max_ngram_repeats: int | None = Field(default=3, ge=1, description=(
        "drop teacher answers (SFT rows, DPO teacher-chosen) repeating one word n-gram more than this many times; "
        "unset: off"))
    curriculum: list[Literal["easy", "medium", "hard", "unsolved"]] = Field(
        default_factory=lambda: ["easy", "medium", "hard", "unsolved"])

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {sum(v.values()):g}")
        return v


class ExportConfig(Section):
    name: str = "relevance"
    kinds: list[Literal["sft", "dpo", "grpo", "steps"]] = Field(default_factory=lambda: ["sft", "dpo", "grpo"])
    format: Literal["label_first", "cot_first"] = "label_first"
    sources: list[str] = Field(default_factory=list, description="only pairs from these sources; empty: all")

    @field_validator("name")
    @classmethod
    def _one_folder(cls, v: str) -> str:
        try:
            return check_dataset_name(v)
        except CotgenError as e:
            raise ValueError(str(e)) from None


class PipelineConfig(Section):
    """The stages `cotgen run` runs, in order."""

    stages: list[str] = Field(default_factory=lambda: ["ingest"])


class StoreConfig(Section):
    path: str = "store.duckdb"
    lock_timeout_s: float = Field(default=30.0, ge=0)
    # DuckDB spills to disk beyond this, so big ingests and selections stay flat in memory.
    memory_limit: str = "1GB"


class TrainingConfig(Section):
    """What the `train` and `eval` stages of `cotgen run` do, and CumPT's serving tiers.

    `tiers` maps a scheme name to {tier: [grades]} (tiers best first); a scheme without an entry keeps one
    tier per grade. The stage defaults are small so a CPU run finishes in minutes; real runs use the CLI.
    """

    tiers: dict[str, dict[str, list[str]]] = Field(
        default_factory=lambda: {s: {"Good": ["L4", "L3"], "Mid": ["L2"], "Bad": ["L1"]} for s in ("taosr4", "crowdflower")}
    )
    trainer: Literal["sft", "dpo", "grpo", "srpo"] = "sft"
    model: str | None = None
    max_steps: int = Field(default=5, ge=1)
    lora: bool = False
    overrides: list[str] = Field(default_factory=lambda: ["batch_size=4", "grad_accum=1", "max_length=384"],
                                 description="trainer config fields for the stage, as `cotgen train --set`")
    eval_mode: Literal["auto", "generate", "label-prob"] = "auto"
    eval_limit: int | None = Field(default=50, ge=1)
    max_new_tokens: int = Field(default=256, ge=1)


class ReviewConfig(Section):
    """Annotator review: how items are shared out and which reason codes the keys offer.

    `overlap` is the share of items given to two annotators (agreement, Cohen's kappa); `gold_fraction` the
    share of each annotator's items drawn from pairs with a trusted label (`cotgen review gold`). Reason codes
    map a code to its meaning; at most 9 each, so one digit key picks one.
    """

    overlap: float = Field(default=0.1, ge=0.0, le=1.0)
    gold_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    claim_expiry_minutes: float = Field(default=120.0, gt=0)
    reject_reasons: dict[str, str] = Field(default_factory=lambda: {
        "wrong_label": "The final label is wrong.",
        "bad_reasoning": "A step's reasoning is wrong or does not support the label.",
        "hallucination": "States facts that the query or item text does not support.",
        "bad_format": "Steps missing, out of order or unreadable.",
        "rule_misuse": "Applies a retrieved rule that does not fit, or ignores one that does.",
    })
    relabel_reasons: dict[str, str] = Field(default_factory=lambda: {
        "gold_wrong": "The ingested label contradicts the guidelines.",
        "ambiguous": "The query allows more than one reading; the label picks the likelier one.",
        "guideline_change": "The guidelines changed since the label was given.",
    })

    @field_validator("reject_reasons", "relabel_reasons")
    @classmethod
    def _one_digit_each(cls, v: dict[str, str]) -> dict[str, str]:
        if not 1 <= len(v) <= 9:
            raise ValueError(f"give 1 to 9 reason codes (one digit key each), got {len(v)}")
        return v


class CotgenConfig(Section):
    """Everything in cotgen.toml."""

    sources: list[SourceConfig] = Field(default_factory=list)
    schemes: dict[str, LabelScheme] = Field(default_factory=dict)
    store: StoreConfig = Field(default_factory=StoreConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    teacher: BackendConfig = Field(default_factory=BackendConfig)
    policy: BackendConfig = Field(default_factory=BackendConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    curation: CurationConfig = Field(default_factory=CurationConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    @field_validator("schemes", mode="before")
    @classmethod
    def _name_user_schemes(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: {"name": k, **s} if isinstance(s, dict) else s for k, s in v.items()}
        return v

    def scheme(self, name: str) -> LabelScheme:
        try:
            return resolve_scheme(name, self.schemes)
        except KeyError as e:
            raise CotgenError(str(e.args[0])) from None

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise CotgenError(f"unknown source '{name}' (known: {known})")

    def known_schemes(self) -> list[str]:
        return sorted({*BUILTIN_SCHEMES, *self.schemes})


def _describe(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in err and err["type"] not in ("missing", "url_credentials"):
        msg = f"{msg}, got {err['input']!r}"
    return f"{key}: {msg}"


def parse_config(text: str, origin: str = CONFIG_FILE) -> CotgenConfig:
    """Parse and validate TOML text; errors name the file, the key and what was expected."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CotgenError(f"{origin}: not valid TOML: {e}") from None
    try:
        config = CotgenConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise CotgenError(f"{origin}: {_describe(first)}{more}") from None
    for src in config.sources:
        if src.scheme not in config.known_schemes():
            raise CotgenError(
                f"{origin}: sources.{src.name}.scheme: unknown scheme '{src.scheme}' "
                f"(known: {', '.join(config.known_schemes())})"
            )
    return config


def load_config(path: Path) -> CotgenConfig:
    require_file(path, "; run `cotgen init` to create a workspace")
    return parse_config(read_text(path), origin=str(path))
