"""TRL is the judge of the formats: its trainers take a real export as it is and run one step with SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk
from helpers_curation import build_store, ingest_crowdflower

from cotgen.app.export import policy_prompt_renderer
from curation.export import export_dataset
from schemas.answer import find_label
from schemas.labels import LabelScheme

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """An export of every kind, with the policy prompt generation uses."""
    ws = ingest_crowdflower(tmp_path_factory.mktemp("trl") / "ws", shared_data)
    build_store(ws, n_queries=4)
    result = export_dataset(ws, "trl", ["sft", "dpo", "grpo"], "label_first", policy_prompt_renderer(ws, "label_first"))
    return result.path


def rows(version: Path, kind: str, n: int = 8):
    """The first rows of the exported train split, exactly as saved (one step needs few)."""
    train = load_from_disk(str(version / kind))["train"]
    return train.select(range(min(n, train.num_rows)))


def common_args(tmp_path: Path) -> dict:
    return {"output_dir": str(tmp_path / "out"), "max_steps": 1, "per_device_train_batch_size": 2, "bf16": False,
            "use_cpu": True, "report_to": "none", "save_strategy": "no", "logging_steps": 1, "seed": 0}


def test_sft_trainer_runs_a_step(version: Path, smollm2_path: str, tmp_path: Path) -> None:
    from trl import SFTConfig, SFTTrainer

    train = rows(version, "sft")
    trainer = SFTTrainer(model=smollm2_path, train_dataset=train,
                         args=SFTConfig(max_length=192, **common_args(tmp_path)))
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss > 0


def test_dpo_trainer_runs_a_step(version: Path, smollm2_path: str, tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer

    train = rows(version, "dpo")
    trainer = DPOTrainer(model=smollm2_path, train_dataset=train,
                         args=DPOConfig(max_length=192, **common_args(tmp_path)))
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss > 0


def test_grpo_trainer_rewards_from_the_label_column(version: Path, smollm2_path: str, tmp_path: Path) -> None:
    from trl import GRPOConfig, GRPOTrainer

    manifest = json.loads((version / "manifest.json").read_text())
    scheme = LabelScheme.model_validate(manifest["scheme"])
    train = rows(version, "grpo")
    seen: list[str] = []

    def label_reward(completions: list, label: list[str], **_: object) -> list[float]:
        """1 when the rollout's `Label:` is the exported gold label."""
        seen.extend(label)
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [float(find_label(t, scheme) == gold) for t, gold in zip(texts, label, strict=True)]

    args = GRPOConfig(num_generations=2, max_completion_length=12, temperature=1.0, **common_args(tmp_path))
    trainer = GRPOTrainer(model=smollm2_path, reward_funcs=label_reward, train_dataset=train, args=args)
    out = trainer.train()
    assert out.global_step == 1
    assert seen and set(seen) <= set(train["label"])
