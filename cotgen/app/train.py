"""Training as a use case: the trainer config from overrides, the run directory and model, the run, the stage.

`training` does the work (TRL trainers, resuming, the run manifest); this module resolves what the workspace
says (dataset versions, models, run directories, `[training]`) and reports progress as events.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cotgen.app.progress import Notice, ProgressEvent, Reporter, silent
from cotgen.judge import load_judge_prompt, parse_verdicts, render_messages, verdict_schema
from cotgen.prompting import Prompt
from curation.runs import pairs_by_id
from curation.store import open_store
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from schemas.labels import LabelScheme
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.workspace import Workspace
from training.data import ExportedVersion, open_version
from training.manifest import RUN_MANIFEST, read_run_manifest

if TYPE_CHECKING:  # training's modules import torch and TRL (seconds); commands must not pay for it
    from openai import OpenAI

    from training.configs import CotgenFields, SRPOTrainConfig
    from training.runner import RunResult
    from training.srpo import StepJudge, StepJudgeRequest

TrainerKind = Literal["sft", "dpo", "grpo", "srpo"]
TOML_OVERRIDES = "cotgen.toml [training].overrides"


def config_class(kind: TrainerKind) -> type[CotgenFields]:
    from training.configs import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig, SRPOTrainConfig

    return {"sft": SFTTrainConfig, "dpo": DPOTrainConfig, "grpo": GRPOTrainConfig, "srpo": SRPOTrainConfig}[kind]


def parse_overrides(items: list[str], where: str) -> dict[str, str]:
    """FIELD=VALUE items as a mapping (the last of a repeated field wins, as on a command line)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CotgenError(f"{where} {item}: expected FIELD=VALUE")
        out[name.strip()] = value.strip()
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML mapping of trainer config fields."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CotgenError(f"--config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CotgenError(f"--config {path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CotgenError(f"--config {path}: expected a mapping of FIELD: VALUE, got {type(data).__name__}")
    return data


def build_config(kind: TrainerKind, max_steps: int | None, lora: bool, overrides: list[str] | None,
                 config_file: Path | None = None, where: str = "--set") -> CotgenFields:
    """The trainer's defaults, then the --config file, then overrides (`where` names them), then --max-steps/--lora."""
    from training.configs import parse_config

    sources: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        sources.append((f"--config {config_file}:", read_config_file(config_file)))
    sources.append((where, parse_overrides(overrides or [], where)))
    if max_steps is not None:
        sources.append(("--max-steps", {"max_steps": max_steps}))
    cfg = parse_config(config_class(kind), sources)
    cfg.lora = cfg.lora or lora
    return cfg


def model_ref(ws: Workspace, model: str | None) -> str:
    """--model, else [training].model, else [policy].model; workspace-relative paths resolve against it."""
    return ws.model(model or ws.config.training.model or ws.config.policy.model)


def open_export(ws: Workspace, dataset: str, allow_split: bool = False) -> tuple[ExportedVersion, str | None]:
    """The version a NAME[@vK][:split] reference names, and the split if one was given (eval only)."""
    ref = DatasetRef.parse(dataset)
    if ref.split and not allow_split:
        raise CotgenError(f"--dataset {dataset}: training reads the train split; drop ':{ref.split}'")
    return open_version(ws.datasets_dir, ref), ref.split


def latest_export(ws: Workspace, stage: str) -> ExportedVersion:
    """The newest version of [export].name, for the pipeline stages."""
    name = ws.config.export.name
    if not DatasetRef(name).versions(ws.datasets_dir):
        raise CotgenError(f"stage {stage}: no exported version of '{name}' yet; run the export stage "
                          f"(`cotgen export {name}`) first")
    return open_version(ws.datasets_dir, DatasetRef(name))


def stage_run_dir(ws: Workspace, version: ExportedVersion) -> Path:
    return ws.runs_dir / f"{version.name}-{ws.config.training.trainer}"


@dataclass
class TrainResult:
    """One training run: where, on what, from which model, and what the trainer reported."""

    kind: TrainerKind
    version: ExportedVersion
    model_ref: str
    run: RunResult

    @property
    def output_dir(self) -> Path:
        return self.run.output_dir

    def to_dict(self) -> dict[str, Any]:
        return {**self.run.to_dict(), "manifest": str(self.run.output_dir / RUN_MANIFEST)}


class ServerStepJudge:
    """SRPO's in-training step judge: cotgen.judge's prompt and verdict parser against an OpenAI-compatible server.

    A verdict becomes +1 (correct) or -1 (incorrect); a step without one, a pair not in the store or a failed
    request gives None (the step then takes its verifier reward, or no step credit). Failures are counted and the
    first one is reported.
    """

    def __init__(self, client: OpenAI, model: str, prompt: Prompt, pairs: dict[str, Pair], rules: dict[str, list[Rule]],
                 scheme: LabelScheme, structured: bool, show_gold: bool, max_tokens: int, workers: int,
                 report: Reporter = silent) -> None:
        self.client, self.model, self.prompt, self.pairs, self.scheme = client, model, prompt, pairs, scheme
        self.rules = rules
        self.structured, self.show_gold, self.max_tokens, self.workers = structured, show_gold, max_tokens, workers
        self.report = report
        self.failures = 0
        self._lock = threading.Lock()

    def __call__(self, requests: Sequence[StepJudgeRequest]) -> list[list[float | None]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, req: StepJudgeRequest) -> list[float | None]:
        import openai

        names = [s.name for s in req.steps]
        pair = self.pairs.get(req.pair_id or "")
        if pair is None:
            return [None] * len(names)
        messages = render_messages(self.prompt, pair, self.scheme, req.steps, rules=self.rules.get(pair.pair_id, ()),
                                   gold=req.label if self.show_gold else None, predicted=req.predicted,
                                   structured=self.structured)
        schema = {"response_format": {"type": "json_schema", "json_schema": {
            "name": "step_verdicts", "schema": verdict_schema(names)}}} if self.structured else {}
        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0.0,
                                                        max_tokens=self.max_tokens, **schema)
        except openai.OpenAIError as e:
            with self._lock:
                self.failures += 1
                first = self.failures == 1
            if first:
                self.report(Notice(f"step judge: a request failed ({str(e).splitlines()[0]}); its steps get no "
                                   "judge reward", "warning"))
            return [None] * len(names)
        verdicts = parse_verdicts(reply.choices[0].message.content or "", names).verdicts
        return [None if v is None else 1.0 if v else -1.0 for v in verdicts]


def build_step_judge(ws: Workspace, version: ExportedVersion, cfg: SRPOTrainConfig,
                     report: Reporter = silent) -> tuple[StepJudge | None, dict[str, Any] | None]:
    """The judge SRPO calls during training and what the run manifest records of it (never the key).

    The endpoint is cfg.judge_base_url, else [judge].base_urls[0] when [judge].backend is openai; none (or
    judge_weight = 0) trains on the offline verifier alone.
    """
    jcfg = ws.config.judge
    base_url = cfg.judge_base_url or (jcfg.base_urls[0] if jcfg.backend == "openai" and jcfg.base_urls else None)
    if not base_url or cfg.judge_weight <= 0:
        report(Notice("srpo: no judge server (judge_base_url or an openai [judge]); step credit from human step "
                      "marks only", "warning"))
        return None, None
    import openai

    key_env = cfg.judge_api_key_env or jcfg.api_key_env
    model = cfg.judge_model or jcfg.model
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(key_env) or "EMPTY", timeout=jcfg.timeout_s,
                           max_retries=min(jcfg.max_retries, 2))
    try:
        client.models.list()
    except openai.OpenAIError as e:
        raise CotgenError(f"srpo judge {base_url}: not reachable ({str(e).splitlines()[0]})") from None
    from cotgen.app.index import rules_by_id  # faiss: only when a judge is used
    from curation.judge import pair_rule_ids

    pair_ids = sorted(set(version.split("grpo", "train")["pair_id"]))
    with open_store(ws, read_only=True) as store:
        pairs = {p.pair_id: p for p in pairs_by_id(store, pair_ids)}
        rule_ids = pair_rule_ids(store, pair_ids)  # the rules a teacher prompt of the pair got, as offline judging
    by_id = rules_by_id(ws, {r for ids in rule_ids.values() for r in ids}, report)
    rules = {p: [by_id[r] for r in ids if r in by_id] for p, ids in rule_ids.items()}
    prompt = load_judge_prompt(jcfg.prompt)
    judge = ServerStepJudge(client, model, prompt, pairs, rules, version.scheme, jcfg.structured, jcfg.show_gold,
                            jcfg.max_tokens, cfg.judge_workers, report)
    info = {"base_url": base_url, "model": model, "api_key_env": key_env, "prompt": prompt.name,
            "prompt_hash": prompt.hash, "structured": jcfg.structured, "show_gold": jcfg.show_gold,
            "pairs_found": len(pairs), "pairs": len(pair_ids), "pairs_with_rules": sum(bool(r) for r in rules.values())}
    return judge, info


def run_trainer(ws: Workspace, kind: TrainerKind, version: ExportedVersion, model: str, output: Path,
                cfg: CotgenFields, report: Reporter = silent) -> TrainResult:
    """Train `kind` on `version` into `output`, resuming from its last checkpoint; progress as 'train' events."""
    from training.dpo import train_dpo
    from training.grpo import train_grpo
    from training.sft import train_sft
    from training.srpo import train_srpo

    what = f"{kind} on {version.name}@v{version.version}"

    def on_step(step: int, total: int) -> None:
        report(ProgressEvent("train", step, total or None, what))

    if kind == "srpo":
        judge, info = build_step_judge(ws, version, cfg, report)  # type: ignore[arg-type]
        run = train_srpo(version, model, output, cfg, judge, info, on_step=on_step)  # type: ignore[arg-type]
    else:
        run = {"sft": train_sft, "dpo": train_dpo, "grpo": train_grpo}[kind](version, model, output, cfg,
                                                                            on_step=on_step)
    report(ProgressEvent("train", run.global_step, run.global_step, what, finished=True))
    return TrainResult(kind, version, model, run)


def train(ws: Workspace, kind: TrainerKind, dataset: str, make_config: Callable[[], CotgenFields],
          model: str | None = None, output: Path | None = None, report: Reporter = silent) -> TrainResult:
    """`cotgen train KIND`: the run directory defaults to runs/NAME-KIND; re-running it resumes.

    The config is made once the dataset is found: making it imports TRL (seconds), a wrong name is instant."""
    version, _ = open_export(ws, dataset)
    cfg = make_config()
    out = ws.path(str(output)) if output else ws.runs_dir / f"{version.name}-{kind}"
    return run_trainer(ws, kind, version, model_ref(ws, model), out, cfg, report)


@dataclass
class TrainStageResult:
    """The train stage: the run it made, or the finished run it kept."""

    output_dir: Path
    global_step: int
    skipped: bool
    trained: TrainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.trained is None:
            return {"output_dir": str(self.output_dir), "global_step": self.global_step, "skipped": self.skipped}
        return {**self.trained.run.to_dict(), "skipped": self.skipped}


class TrainStage:
    """[training].trainer on the latest export for [training].max_steps with [training].overrides; a finished run
    on the same data is kept."""

    name = "train"

    def run(self, ws: Workspace, report: Reporter) -> TrainStageResult:
        tcfg = ws.config.training
        version = latest_export(ws, self.name)
        out = stage_run_dir(ws, version)
        done = read_run_manifest(out) or {}
        if (done.get("status") == "finished" and done.get("dataset", {}).get("content_hash") == version.content_hash
                and done.get("global_step", 0) >= tcfg.max_steps):
            report(Notice(f"{out}: already trained on {version.name}@v{version.version}; nothing to do"))
            return TrainStageResult(out, done["global_step"], skipped=True)
        cfg = build_config(tcfg.trainer, tcfg.max_steps, tcfg.lora, tcfg.overrides, where=TOML_OVERRIDES)
        result = run_trainer(ws, tcfg.trainer, version, model_ref(ws, None), out, cfg, report)
        return TrainStageResult(out, result.run.global_step, skipped=False, trained=result)


STAGES = [TrainStage()]
