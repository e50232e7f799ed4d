"""Training and evaluation end to end on a real export: real store, `cotgen export`, TRL trainers, SmolLM2 on CPU.

The store holds the example pairs plus synthetic teacher/policy runs written with SQL (as curation's tests do);
`cotgen export` turns them into the version every test trains on. Steps and lengths are tiny: CPU time is shared.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers_curation import add_review, build_store
from helpers_training import LoopbackJudge, wrong_label

from curation.store import open_store
from schemas.answer import parse_answer, render_answer
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES, Grade, LabelScheme
from schemas.sample import Step
from schemas.workspace import Workspace
from training.configs import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig
from training.data import open_version
from training.evaluate import eval_rows
from training.metrics import scheme_metrics

from conftest import COTGEN, ROOT, run_cli

pytestmark = pytest.mark.slow
TINY = ["--set", "batch_size=2", "--set", "grad_accum=1", "--set", "max_length=160", "--set", "save_steps=1",
        "--set", "logging_steps=1"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """`cotgen init --example` + ingest, synthetic runs and a few step marks, then `cotgen export relevance`."""
    root = tmp_path_factory.mktemp("training") / "ws"
    run_cli("init", "--example", str(root))
    run_cli("ingest", "-w", str(root))
    workspace = Workspace.open(root)
    build_store(workspace, n_queries=12)
    with open_store(workspace) as store:
        marked = store.rows("SELECT pair_id, sample_id FROM samples WHERE run_id = 'run-policy-1' ORDER BY sample_id LIMIT 12")
        for i, (pair_id, sample_id) in enumerate(marked):
            add_review(store, "accept", pair_id, sample_id=sample_id)
            add_review(store, "step", pair_id, sample_id=sample_id, step_index=i % 5, step_correct=False)
    run_cli("export", "relevance", "--kind", "all", "-w", str(root))
    return workspace


@pytest.fixture(scope="module")
def sft_run(ws: Workspace) -> dict:
    """One SFT step through the real CLI; the output directory is what later tests resume and evaluate."""
    proc = run_cli("train", "sft", "--dataset", "relevance", "--model", "bundled:smollm2-135m-instruct",
                   "--max-steps", "1", *TINY, "-w", str(ws.root), "--json")
    return json.loads(proc.stdout)


def test_export_is_what_training_reads(ws: Workspace) -> None:
    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    assert version.order == "label_first" and version.scheme.ids == ["L4", "L3", "L2", "L1"]
    assert {"sft", "dpo", "grpo", "steps"} <= set(version.kinds)
    assert len(version.content_hash) == 64


def test_sft_via_cli_writes_model_checkpoint_and_manifest(ws: Workspace, sft_run: dict) -> None:
    out = ws.runs_dir / "relevance-sft"
    assert sft_run["output_dir"] == str(out) and sft_run["global_step"] == 1
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert (out / "tokenizer_config.json").exists() and (out / "checkpoint-1").is_dir()
    manifest = json.loads((out / "run_manifest.json").read_text())
    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    assert manifest["status"] == "finished" and manifest["trainer"] == "sft"
    assert manifest["dataset"]["name"] == "relevance" and manifest["dataset"]["version"] == version.version
    assert manifest["dataset"]["content_hash"] == version.content_hash
    assert manifest["base_model"]["ref"] == "bundled:smollm2-135m-instruct"
    assert manifest["config"]["max_steps"] == 1 and manifest["config"]["batch_size"] == 2
    assert manifest["toolkit_version"] and manifest["precision"] == "fp32"
    assert manifest["scheme_definition"]["name"] == version.scheme.name


def test_resume_continues_from_the_last_checkpoint(ws: Workspace, sft_run: dict) -> None:
    from training.runner import disk_use
    from training.sft import train_sft

    out = Path(sft_run["output_dir"])
    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    cfg = SFTTrainConfig(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1, max_length=160,
                         save_steps=100, logging_steps=1)
    half_saved = out / "checkpoint-5"  # what a kill during a checkpoint save leaves: weights, no trainer state
    half_saved.mkdir()
    shutil.copy(out / "checkpoint-1" / "config.json", half_saved / "config.json")
    result = train_sft(version, "bundled:smollm2-135m-instruct", out, cfg)
    assert result.resumed_from == str(out / "checkpoint-1"), "a checkpoint without its trainer state is passed over"
    assert result.global_step == 2
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["global_step"] == 2 and manifest["resumed_from"].endswith("checkpoint-1")
    assert (out / "checkpoint-2").is_dir()  # the final step is always saved, so a later run resumes from it
    # CPU default: model-only checkpoints (no AdamW state). The LR schedule continues: step 2 of a 2-step run with
    # one warmup step trains at the peak rate, where a fresh schedule would warm up from 0 again.
    assert manifest["checkpoints"] == "model-only" and not list(out.glob("checkpoint-*/optimizer.pt"))
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert [e["learning_rate"] for e in state["log_history"] if e.get("step") == 2 and "loss" in e] == [cfg.learning_rate]
    assert manifest["disk_bytes"] == result.disk_bytes and abs(disk_use(out) - result.disk_bytes) < 100_000  # the manifest

    other = dataclasses.replace(version, manifest={**version.manifest, "content_hash": "0" * 64})
    with pytest.raises(CotgenError, match="would mix runs"):
        train_sft(other, "bundled:smollm2-135m-instruct", out, cfg)


def test_sigterm_stops_training_like_ctrl_c_and_the_rerun_resumes(ws: Workspace) -> None:
    args = ["train", "sft", "--dataset", "relevance", "--max-steps", "50", "--output", "runs/stopped", *TINY,
            "-w", str(ws.root), "--json"]
    out = ws.root / "runs" / "stopped"
    proc = subprocess.Popen([*COTGEN, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-1" / "trainer_state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: what was finished is saved" in err and "Traceback" not in err
    done = [int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/trainer_state.json")]
    assert done and max(done) < 50, "stopped part-way, with complete checkpoints kept"
    again = json.loads(run_cli(*[a if a != "50" else str(max(done) + 1) for a in args]).stdout)
    assert again["resumed_from"] == str(out / f"checkpoint-{max(done)}") and again["global_step"] == max(done) + 1


def test_eval_cli_label_prob_with_cumpt(ws: Workspace, sft_run: dict) -> None:
    proc = run_cli("eval", "--model", "runs/relevance-sft", "--dataset", "relevance:test", "--cumpt", "-w", str(ws.root),
                   "--json")
    report = json.loads(proc.stdout)
    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    rows = eval_rows(version, "test", None)
    assert report["mode"] == "label-prob" and report["split"] == "test"
    assert report["metrics"]["n"] == len(rows) and report["metrics"]["parsed"] == len(rows)
    # The version's eval set: every labelled pair of the test queries, as many as the store holds for them.
    assert report["rows_from"].startswith("every labelled pair")
    test_queries = sorted(set(version.split("eval", "test")["query_id"]))
    with open_store(ws, read_only=True) as store:
        (labelled,) = store.one("SELECT count(*) FROM gold_pairs WHERE list_contains(?, query_id)", [test_queries])
    assert report["metrics"]["n"] == labelled
    assert any(f"test split: n = {len(rows)} rows" in w for w in report["warnings"]), "a small split is said to be"
    preds = [json.loads(line) for line in Path(report["files"]["predictions"]).read_text().splitlines()]
    assert {p["pair_id"] for p in preds} == {r["pair_id"] for r in rows}
    for p in preds:
        assert set(p["probs"]) == set(version.scheme.ids)
        assert sum(p["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["predicted"] == max(p["probs"], key=p["probs"].get)
    recomputed = scheme_metrics([p["gold"] for p in preds], [p["predicted"] for p in preds], version.scheme)
    assert report["metrics"]["macro_f1"] == pytest.approx(recomputed.macro_f1)
    assert report["metrics"]["qwk"] == pytest.approx(recomputed.qwk)
    cumpt = report["cumpt"]
    assert 0 < cumpt["beta"] <= 1 and cumpt["calibrated_on"] == "validation"
    assert cumpt["tiers"] == {"Good": ["L4", "L3"], "Mid": ["L2"], "Bad": ["L1"]}
    assert Path(report["files"]["confusion"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_and_eval_stages(ws: Workspace, sft_run: dict) -> None:
    from cotgen.app.pipeline import stages
    from cotgen.app.progress import silent

    training = ws.config.training.model_copy(update={"max_steps": 1, "eval_limit": 2})
    ws = Workspace(ws.root, ws.config.model_copy(update={"training": training}))  # as if cotgen.toml said so
    train = stages()["train"].run(ws, silent).to_dict()
    assert train["skipped"] is True  # [training].max_steps = 1 and the run on this version is done
    evaluated = stages()["eval"].run(ws, silent).to_dict()
    assert evaluated["model"] == str(ws.runs_dir / "relevance-sft")
    assert evaluated["rows"] == min(2, len(eval_rows(open_version(ws.datasets_dir, DatasetRef("relevance")), "test", None)))
    assert Path(evaluated["files"]["metrics"]).exists()


def test_dpo_with_lora_a_step(ws: Workspace) -> None:
    from training.dpo import train_dpo

    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    out = ws.runs_dir / "dpo-lora"
    cfg = DPOTrainConfig(max_steps=1, per_device_train_batch_size=1, gradient_accumulation_steps=1, max_length=160,
                         lora=True, save_steps=100, logging_steps=1)
    result = train_dpo(version, "bundled:smollm2-135m-instruct", out, cfg)
    assert result.global_step == 1
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()  # merged: loads without peft
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["trainer"] == "dpo" and manifest["config"]["lora"] is True and manifest["config"]["beta"] == 0.1
    assert "rewards/margins" in json.dumps(json.loads((out / "checkpoint-1" / "trainer_state.json").read_text()))


def test_grpo_with_lora_a_step_with_label_format_and_step_rewards(ws: Workspace) -> None:
    from training.grpo import train_grpo

    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    out = ws.runs_dir / "grpo"
    cfg = GRPOTrainConfig(max_steps=1, per_device_train_batch_size=2, num_generations=2, max_completion_length=8,
                          beta=0.0, max_length=160, save_steps=100, logging_steps=1, lora=True)
    result = train_grpo(version, "bundled:smollm2-135m-instruct", out, cfg)
    assert result.global_step == 1
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["rewards"] == ["label_correctness", "answer_format", "step_agreement"]
    assert manifest["config"]["group_size"] == 2
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    logged = state["log_history"][0]
    assert "rewards/label_correctness/mean" in logged and "rewards/answer_format/mean" in logged


def test_label_probabilities_sum_to_one_and_generation_parses(ws: Workspace) -> None:
    from training.predict import generate_predictions, label_prob_predictions, label_reading, load_model

    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    rows = eval_rows(version, "train", 3)
    lm = load_model("bundled:smollm2-135m-instruct")
    for pred in label_prob_predictions(lm, rows, version.scheme, batch_size=3):
        assert set(pred.probs) == set(version.scheme.ids)
        assert sum(pred.probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert 0 < pred.label_mass <= 1.0
    # Labels that share their first tokens ("Good" / "Goodish") are scored as whole sequences; still a distribution.
    shared = LabelScheme(name="shared", relevant=["Good"], grades=[
        Grade(id="Good", name="good", meaning="."), Grade(id="Goodish", name="goodish", meaning="."),
        Grade(id="Bad", name="bad", meaning=".")])
    gold = [{**rows[0], "label": "Good"}]
    prompt_text = lm.tokenizer.apply_chat_template(gold[0]["prompt"], add_generation_prompt=True, tokenize=False)
    assert label_reading(lm.tokenizer, prompt_text, shared).next_token is None
    (pred,) = label_prob_predictions(lm, gold, shared)
    assert sum(pred.probs.values()) == pytest.approx(1.0, abs=1e-6) and len(set(pred.probs.values())) == 3
    (generated,) = generate_predictions(lm, rows[:1], version.scheme, max_new_tokens=8)
    assert generated.text and generated.parse_status in ("ok", "partial", "no_label", "empty")
    assert generated.predicted == parse_answer(generated.text, version.scheme).label


JUDGED = {"query_understanding": "correct", "item_understanding": "correct", "category_matching": "incorrect",
          "attribute_matching": "correct", "relevance_judgement": "correct"}


def _rollout_text(label: str) -> str:
    """A well-formed label_first answer; the loopback judge marks its category step wrong whatever it says."""
    steps = [Step(name="query_understanding", text="The shopper wants a phone case for a small phone."),
             Step(name="item_understanding", text="The item is a leather phone case."),
             Step(name="category_matching", text="Both are phone accessories."),
             Step(name="attribute_matching", text="Size and material are not stated in the query."),
             Step(name="relevance_judgement", text=f"So the grade is {label}.")]
    return render_answer(steps, label, "label_first")


def test_srpo_step_credit_follows_the_judge_and_a_step_changes_the_weights(ws: Workspace) -> None:
    """Fixed rollouts (one right label, one wrong per prompt) through the real SRPO trainer and a loopback judge."""
    import torch

    from cotgen.app.index import build_index, load_index
    from cotgen.app.progress import silent
    from cotgen.app.train import build_config, build_step_judge
    from schemas.models import resolve_model
    from training.grpo import grpo_args, grpo_rewards, grpo_train_set
    from training.runner import load_tokenizer
    from training.srpo import SRPOTrainer

    version = open_version(ws.datasets_dir, DatasetRef.parse("relevance"))
    model = resolve_model("bundled:smollm2-135m-instruct")
    tokenizer = load_tokenizer(model)
    build_index(ws)
    rule_ids = [rule.id for rule in load_index(ws).docs[:2]]  # the teacher prompts "got" two rules
    with open_store(ws) as store:
        store.rows("UPDATE samples SET rule_ids = ? WHERE run_id = 'run-teacher-1'", [rule_ids])
    with LoopbackJudge(JUDGED) as server:
        cfg = build_config("srpo", 1, False, ["batch_size=2", "group_size=2", "beta=0", "warmup=0", "save_steps=100",
                                              "logging_steps=1", "verifier_weight=0", f"judge_base_url={server.base_url}"])
        judge, info = build_step_judge(ws, version, cfg, silent)
        assert judge is not None and info is not None and info["base_url"] == server.base_url
        train, _ = grpo_train_set(version, cfg, with_marks=False)
        gold = {json.dumps(row["prompt"]): row["label"] for row in train}

        def rollouts(prompts: list, trainer: object) -> dict:
            """Even rollouts answer the gold label, odd ones a wrong one (a group is two consecutive rollouts)."""
            out: dict[str, list] = {"prompt_ids": [], "completion_ids": []}
            for i, prompt in enumerate(prompts):
                label = gold[json.dumps(prompt)] if i % 2 == 0 else wrong_label(gold[json.dumps(prompt)], version.scheme)
                text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
                out["prompt_ids"].append(tokenizer(text, add_special_tokens=False)["input_ids"])
                out["completion_ids"].append(tokenizer(_rollout_text(label), add_special_tokens=False)["input_ids"]
                                             + [tokenizer.eos_token_id])
            return {**out, "logprobs": None}

        funcs, weights = grpo_rewards(version, cfg, with_steps=False)
        trainer = SRPOTrainer(model=model, reward_funcs=funcs, args=grpo_args(cfg, ws.runs_dir / "srpo-fixed", weights),
                              train_dataset=train, processing_class=tokenizer, scheme=version.scheme,
                              step_judge=judge, rollout_func=rollouts)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
    assert server.requests and server.requests[0]["response_format"]["type"] == "json_schema"
    assert info["pairs_with_rules"] > 0 and any(
        "Relevance rules that may apply" in r["messages"][-1]["content"] for r in server.requests), \
        "the judge reads the rules a teacher prompt of the pair was given, as offline judging does"
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > len(before) // 2, "one SRPO step moved the weights"

    advantages, credit = trainer.last_advantages, trainer.last_credit
    assert advantages is not None and advantages.dim() == 2
    right = {c.name: c for c in credit[0]}  # the rollout with the gold label
    assert set(right) == set(JUDGED)
    outcome = advantages[0, 0].item()  # the `Label:` line: the outcome advantage alone
    assert outcome > 0 > advantages[1, 0].item()
    wrong_step, right_step = right["category_matching"], right["query_understanding"]
    assert wrong_step.reward == -1.0 and right_step.reward == 1.0 and wrong_step.z < 0 < right_step.z
    in_wrong = advantages[0, wrong_step.start:wrong_step.end]
    in_right = advantages[0, right_step.start:right_step.end]
    assert torch.allclose(in_wrong, torch.full_like(in_wrong, outcome + cfg.step_lambda * wrong_step.z))
    assert in_wrong.max() < outcome < in_right.min(), "the step judged wrong gets less credit than the label line"


def test_step_token_spans_cover_each_step_and_not_the_label_line() -> None:
    from schemas.models import resolve_model
    from training.runner import load_tokenizer
    from training.srpo import step_spans, token_offsets, token_range

    tokenizer = load_tokenizer(resolve_model("bundled:smollm2-135m-instruct"))
    ids = tokenizer(_rollout_text("L2"), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    text, offsets = token_offsets(tokenizer, ids)
    assert text == _rollout_text("L2") and offsets[-1][0] == offsets[-1][1]  # the EOS token holds no text
    steps = parse_answer(text, BUILTIN_SCHEMES["taosr4"]).steps
    ranges = [token_range(offsets, span) for span in step_spans(text, steps) if span]
    assert len(ranges) == 5 and ranges[0][0] > 0, "the label line's tokens belong to no step"
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False)), "in order, not overlapping"
    pieces = [tokenizer.decode(ids[a:b]) for a, b in ranges]
    assert pieces[2].strip() == "3. Category matching: Both are phone accessories."
    assert pieces[4].strip() == "5. Relevance judgement: So the grade is L2."


def test_srpo_via_cli_records_the_judge_and_the_formula(ws: Workspace) -> None:
    with LoopbackJudge(JUDGED) as server:
        proc = run_cli("train", "srpo", "--dataset", "relevance", "--model", "bundled:smollm2-135m-instruct",
                       "--max-steps", "1", "--set", "batch_size=2", "--set", "group_size=2", "--set", "beta=0",
                       "--set", "max_completion_length=8", "--set", "save_steps=100", "--set", "logging_steps=1",
                       "--set", f"judge_base_url={server.base_url}", "--set", "judge_api_key_env=SRPO_TEST_KEY",
                       "-w", str(ws.root), "--json", env={"SRPO_TEST_KEY": "not-to-be-written"})
    result = json.loads(proc.stdout)
    assert result["global_step"] == 1
    text = Path(result["manifest"]).read_text()
    manifest = json.loads(text)
    assert manifest["trainer"] == "srpo" and manifest["rewards"] == ["label_correctness", "answer_format"]
    srpo = manifest["srpo"]
    assert srpo["formula"].startswith("A_it = A_i + step_lambda * z_ij") and srpo["step_lambda"] == 0.5
    assert srpo["judge"]["base_url"] == server.base_url and srpo["judge"]["api_key_env"] == "SRPO_TEST_KEY"
    assert len(srpo["judge"]["prompt_hash"]) == 64 and srpo["verifier"]  # the version has a `steps` set
    assert "not-to-be-written" not in text
