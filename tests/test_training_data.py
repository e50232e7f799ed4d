"""Reading exported versions, trainer config overrides and TRL argument mapping (no model loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_training import crowdflower_pairs, split_by_query, write_export

from cotgen.app.train import build_config
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from training.data import open_version, training_columns
from training.evaluate import choose_mode, eval_rows


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("data") / "datasets"
    pairs = crowdflower_pairs(shared_data / "crowdflower" / "train_dev.csv", limit=60)
    splits = split_by_query(pairs)
    write_export(root, "rel", splits)
    write_export(root, "rel", splits, order="cot_first", kinds=("sft",), version=2)
    return root


def test_open_version_reads_manifest_scheme_and_order(datasets_dir: Path) -> None:
    latest = open_version(datasets_dir, DatasetRef.parse("rel"))
    assert latest.version == 2 and latest.order == "cot_first" and latest.kinds == ["sft"]
    v1 = open_version(datasets_dir, DatasetRef.parse("rel@v1"))
    assert v1.order == "label_first" and v1.scheme.name == "crowdflower" and v1.kinds == ["dpo", "grpo", "sft", "steps"]
    assert v1.lineage()["content_hash"] == v1.content_hash != ""
    with pytest.raises(CotgenError, match="has no 'dpo' set"):
        latest.load("dpo")
    with pytest.raises(CotgenError, match="no split 'dev'"):
        v1.split("sft", "dev")


def test_bad_manifest_is_a_one_line_error(datasets_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "datasets"
    (broken / "x" / "v1").mkdir(parents=True)
    (broken / "x" / "v1" / "manifest.json").write_text("{not json")
    with pytest.raises(CotgenError, match=r"manifest.json: not valid JSON"):
        open_version(broken, DatasetRef("x"))
    (broken / "x" / "v1" / "manifest.json").write_text(json.dumps({"scheme": "crowdflower", "format": "sideways"}))
    with pytest.raises(CotgenError, match="format: expected label_first or cot_first"):
        open_version(broken, DatasetRef("x"))


def test_training_columns_keep_what_trl_reads(datasets_dir: Path) -> None:
    v1 = open_version(datasets_dir, DatasetRef.parse("rel@v1"))
    assert training_columns(v1.split("sft", "train"), "sft").column_names == ["prompt", "completion"]
    assert training_columns(v1.split("dpo", "train"), "dpo").column_names == ["prompt", "chosen", "rejected"]
    with pytest.raises(CotgenError, match="missing column"):
        training_columns(v1.split("grpo", "train"), "dpo")


def test_eval_rows_cover_every_set_once_and_mode_follows_the_format(datasets_dir: Path) -> None:
    v1 = open_version(datasets_dir, DatasetRef.parse("rel@v1"))
    rows = eval_rows(v1, "test", None)
    ids = [r["pair_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(v1.split("sft", "test"))
    assert ids == sorted(ids) and eval_rows(v1, "test", 2) == rows[:2]
    assert choose_mode(v1, None) == "label-prob"
    v2 = open_version(datasets_dir, DatasetRef.parse("rel@v2"))
    assert choose_mode(v2, None) == "generate"
    with pytest.raises(CotgenError, match="needs a label_first export"):
        choose_mode(v2, "label-prob")


def test_eval_rows_come_from_the_eval_set_every_labelled_pair(tmp_path: Path, shared_data: Path) -> None:
    """A version whose sft set kept a third of the pairs: eval scores every labelled pair of the split."""
    from training.evaluate import MIN_PER_CLASS, MIN_ROWS, rows_from, small_sample_warnings

    splits = split_by_query(crowdflower_pairs(shared_data / "crowdflower" / "train_dev.csv", limit=300))
    kept = {s: rows[::3] for s, rows in splits.items()}
    write_export(tmp_path, "full", kept, kinds=("sft",), eval_splits=splits)
    version = open_version(tmp_path, DatasetRef("full"))
    rows = eval_rows(version, "test", None)
    assert [r["pair_id"] for r in rows] == sorted(p["pair_id"] for p in splits["test"])
    assert len(rows) > len(version.split("sft", "test"))
    assert rows_from(version).startswith("every labelled pair")
    write_export(tmp_path, "kept", kept, kinds=("sft",))
    assert "re-export" in rows_from(open_version(tmp_path, DatasetRef("kept")))

    golds = [r["label"] for r in rows]
    warned = small_sample_warnings(golds, version.scheme, "test split")
    assert (len(golds) < MIN_ROWS) == any(f"n = {len(golds)} rows" in w for w in warned)
    thin = [g for g in version.scheme.ids if golds.count(g) < MIN_PER_CLASS]
    assert bool(thin) == any("fewer than" in w for w in warned)
    assert small_sample_warnings(["L4"] * 60 + ["L3"] * 60 + ["L2"] * 10 + ["L1"] * 9, version.scheme, "x") == [
        f"x: fewer than {MIN_PER_CLASS} rows of L1 9; their F1 (and macro-F1) is noise"]


def test_build_config_overrides() -> None:
    cfg = build_config("grpo", 3, True, ["group_size=4", "time_budget_s=60", "lora_target_modules=q_proj,v_proj"])
    assert (cfg.group_size, cfg.time_budget_s, cfg.lora_target_modules, cfg.max_steps, cfg.lora) == (
        4, 60.0, ["q_proj", "v_proj"], 3, True)
    assert build_config("sft", None, False, None).max_steps == -1
    with pytest.raises(CotgenError, match="FIELD one of"):
        build_config("sft", None, False, ["group_size=4"])  # a GRPO field
    with pytest.raises(CotgenError, match="expected int"):
        build_config("dpo", None, False, ["batch_size=many"])


def test_trl_arguments_on_cpu(tmp_path: Path) -> None:
    from trl import DPOConfig, GRPOConfig, SFTConfig

    from training.configs import DPOTrainConfig, GRPOTrainConfig, SFTTrainConfig
    from training.grpo import grpo_args
    from training.runner import trainer_args

    sft = trainer_args(SFTTrainConfig(max_steps=5), tmp_path)
    assert isinstance(sft, SFTConfig) and sft.output_dir == str(tmp_path)
    assert (sft.bf16, sft.use_cpu, sft.max_steps, sft.completion_only_loss) == (False, True, 5, True)
    assert sft.gradient_checkpointing is False and sft.report_to == []
    dpo = trainer_args(DPOTrainConfig(), tmp_path)
    assert isinstance(dpo, DPOConfig)
    assert dpo.beta == 0.1 and dpo.loss_type == ["sigmoid"]
    grpo = grpo_args(GRPOTrainConfig(), tmp_path, [1.0, 0.2])
    assert isinstance(grpo, GRPOConfig)
    assert (grpo.num_generations, grpo.temperature, grpo.beta, grpo.epsilon) == (8, 1.0, 0.04, 0.2)
    assert grpo.reward_weights == [1.0, 0.2]


def test_overrides_from_yaml_then_set_typed_by_hf_argparser(tmp_path: Path) -> None:
    """--config FILE.yaml, then --set on top; TRL's names and cotgen's short ones; errors name the source."""
    from training.configs import GRPOTrainConfig
    from training.grpo import grpo_train_set

    config = tmp_path / "grpo.yaml"
    config.write_text("learning_rate: 3.0e-6\nbatch_size: 4\ngroup_size: 2\nlora_target_modules: [q_proj]\n"
                      "scale_rewards: none\nlogging_steps: 1\n", encoding="utf-8")
    cfg = build_config("grpo", None, False, ["per_device_train_batch_size=6", "group_size=3"], config)
    assert (cfg.learning_rate, cfg.per_device_train_batch_size, cfg.num_generations) == (3e-6, 6, 3)
    assert (cfg.lora_target_modules, cfg.scale_rewards, cfg.logging_steps) == (["q_proj"], "none", 1)
    assert cfg.to_dict()["group_size"] == 3 and cfg.to_dict()["num_generations"] == 3
    assert build_config("sft", None, False, ["gradient_checkpointing=false"]).gradient_checkpointing is False
    (tmp_path / "bad.yaml").write_text("learning_rate: fast\n", encoding="utf-8")
    with pytest.raises(CotgenError, match=r"bad.yaml: learning_rate=fast: expected float"):
        build_config("sft", None, False, None, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n", encoding="utf-8")
    with pytest.raises(CotgenError, match="expected a mapping"):
        build_config("sft", None, False, None, tmp_path / "list.yaml")
    with pytest.raises(CotgenError, match="did you mean grad_accum"):
        build_config("sft", None, False, ["grad_acum=2"])
    with pytest.raises(CotgenError, match="must be divisible by num_generations"):
        build_config("grpo", None, False, ["batch_size=8", "group_size=3"])
    with pytest.raises(CotgenError, match="credit_steps: category not among query_understanding"):
        build_config("srpo", None, False, ["credit_steps=category"])
    with pytest.raises(CotgenError, match="reward_weights: set label_weight"):
        grpo_train_set(None, GRPOTrainConfig(reward_weights=[1.0]), with_marks=False)  # type: ignore[arg-type]
