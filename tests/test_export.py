"""Versioned export on a real store: layout, manifest and card, splits, content hash, atomicity, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from datasets import load_from_disk
from helpers_curation import (
    add_review,
    build_store,
    copy_workspace,
    ingest_crowdflower,
    ingest_later_queries,
    pairs_of_queries,
    plain_prompt,
    steps_for,
    synth_run,
    with_curation,
)

from curation.export import export_dataset
from curation.store import open_store
from schemas.answer import render_answer
from schemas.sample import Step
from schemas.workspace import Workspace

from conftest import COTGEN, ROOT

ALL = ["sft", "dpo", "grpo", "steps"]
WRITTEN = [*ALL, "eval"]  # every version also carries the evaluation pairs


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("export") / "ws"
    ws = ingest_crowdflower(root, shared_data)
    build_store(ws, n_queries=8)
    with open_store(ws) as store:  # a few step marks, so the steps kind has rows
        for i in range(5):
            pair_id, sid = store.one("SELECT pair_id, sample_id FROM samples WHERE run_id = 'run-policy-1' "
                                     "ORDER BY sample_id LIMIT 1 OFFSET ?", [i])
            add_review(store, "accept", pair_id, sample_id=sid)
            add_review(store, "step", pair_id, sample_id=sid, step_index=i, step_correct=False)
    return root


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Workspace:
    return copy_workspace(base, tmp_path / "ws")


def export(ws: Workspace, name: str = "rel", kinds: list[str] | None = None, **kw):
    return export_dataset(ws, name, kinds or ALL, "label_first", plain_prompt, **kw)


def split_queries(version_dir: Path) -> dict[str, set[str]]:
    """Query ids per split over every kind of a version, read back from its Parquet files."""
    out: dict[str, set[str]] = {}
    for path in (version_dir / "data").glob("*/*.parquet"):
        out.setdefault(path.stem, set()).update(pq.read_table(path, columns=["query_id"])["query_id"].to_pylist())
    return out


def test_layout_manifest_card(ws: Workspace) -> None:
    result = export(ws)
    v1 = ws.datasets_dir / "rel" / "v1"
    assert result.created and result.version == 1 and result.path == v1
    assert set(result.counts) == set(WRITTEN)
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert manifest["content_hash"] == result.content_hash and manifest["parent"] is None
    assert manifest["format"] == "label_first" and manifest["scheme"]["name"] == "crowdflower"
    assert [g["id"] for g in manifest["scheme"]["grades"]] == ["L4", "L3", "L2", "L1"]
    assert {r["name"] for r in manifest["runs"]} == {"teacher-1", "policy-1"}
    assert set(manifest["prompt_hashes"]) == {"teacher-1", "policy-1", "policy_prompt"}
    assert manifest["models"] == ["bundled:smollm2-135m-instruct"]
    assert manifest["config"]["curation"]["difficulty"]["gamma"] == 0.5 and manifest["toolkit_version"]
    assert manifest["answer_format"]["label_line"] == "Label: {label}"
    assert set(manifest["selection"]["grpo"]) >= {"cv_before", "cv_after"}
    for kind, splits in manifest["counts"].items():
        assert list(splits) == ["train", "validation", "test"] and splits["train"] > 0
        saved = load_from_disk(str(v1 / kind))
        assert list(saved) == [s for s, n in splits.items() if n]  # an empty split is left out
        for split in saved:
            parquet = pq.read_table(v1 / "data" / kind / f"{split}.parquet")
            assert saved[split].num_rows == parquet.num_rows == splits[split]
            assert parquet.column_names == saved[split].column_names
    sft = load_from_disk(str(v1 / "sft"))["train"][0]
    assert sft["prompt"][-1]["role"] == "user" and sft["completion"][0]["role"] == "assistant"
    assert sft["completion"][0]["content"].startswith(f"Label: {sft['label']}\n")
    dpo = load_from_disk(str(v1 / "dpo"))["train"][0]
    assert dpo["chosen"][0]["content"] != dpo["rejected"][0]["content"]
    steps = load_from_disk(str(v1 / "steps"))["train"]
    assert all(len(r["completions"]) == len(r["labels"]) for r in steps)

    card = (v1 / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert [c["config_name"] for c in front["configs"]] == WRITTEN
    for config in front["configs"]:
        assert all((v1 / f["path"]).is_file() for f in config["data_files"])
    assert {f["name"] for f in front["dataset_info"][2]["features"]} >= {"prompt", "label", "difficulty"}
    assert "pass@4" in card and "coefficient of variation" in card
    with open_store(ws, read_only=True) as store:
        assert store.rows("SELECT name, version, content_hash FROM dataset_versions") == [("rel", 1, result.content_hash)]


def test_no_query_leakage_and_every_split_filled(ws: Workspace) -> None:
    result = export(ws)
    queries = split_queries(result.path)
    assert set(queries) == {"train", "validation", "test"} and all(queries.values())
    assert not (queries["train"] & queries["validation"] or queries["train"] & queries["test"]
                or queries["validation"] & queries["test"])
    assigned = pq.read_table(result.path / "splits.parquet").to_pylist()
    assert len({r["query_id"] for r in assigned}) == len(assigned)
    assert {r["query_id"] for r in assigned} == set().union(*queries.values())


def test_same_rows_same_hash_no_new_version(ws: Workspace, tmp_path: Path, base: Path) -> None:
    first = export(ws)
    again = export(ws)
    assert not again.created and again.version == 1 and again.content_hash == first.content_hash
    assert [p.name for p in (ws.datasets_dir / "rel").iterdir()] == ["v1"]
    other = export(copy_workspace(base, tmp_path / "copy"))
    assert other.content_hash == first.content_hash


def test_changed_row_new_version_and_test_split_stays(ws: Workspace, shared_data: Path) -> None:
    v1 = export(ws)
    with open_store(ws) as store:
        pair_id, sid, gold = store.one(
            "SELECT r.pair_id, r.sample_id, p.label FROM samples r JOIN pairs p USING (pair_id) "
            "WHERE r.run_id = 'run-teacher-1' AND r.predicted_label = p.label ORDER BY r.sample_id LIMIT 1")
        pair = next(p for p in pairs_of_queries(store, 8) if p.pair_id == pair_id)
        fixed = [Step(name=s.name, text=s.text + " Checked by hand.") for s in steps_for(pair, gold)]
        add_review(store, "edit", pair_id, sample_id=sid, edited_text=render_answer(fixed, gold, "cot_first"))
    v2 = export(ws)
    assert v2.created and v2.version == 2 and v2.content_hash != v1.content_hash
    assert json.loads((v2.path / "manifest.json").read_text())["parent"] == 1
    # New queries arrive: earlier queries keep their split, the test split above all.
    ingest_later_queries(ws, shared_data, 6)
    with open_store(ws) as store:
        synth_run(store, pairs_of_queries(store, 16), "policy-2", "policy", 4, "label_first", started=30)
    v3 = export(ws)
    before, after = split_queries(v1.path), split_queries(v3.path)
    assert before["test"] <= after["test"] and before["train"] <= after["train"]
    assert len(set().union(*after.values())) > len(set().union(*before.values()))
    pinned = {r["query_id"]: r["split"] for r in pq.read_table(v1.path / "splits.parquet").to_pylist()}
    later = {r["query_id"]: r for r in pq.read_table(v3.path / "splits.parquet").to_pylist()}
    assert all(later[q]["split"] == s and later[q]["since_version"] == 1 for q, s in pinned.items())
    assert any(r["since_version"] == 3 for r in later.values())


def test_interrupted_export_leaves_no_version(ws: Workspace) -> None:
    def stop_while_writing(message: str) -> None:
        if message == "writing dpo":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(ws, progress=stop_while_writing)
    assert not list((ws.datasets_dir / "rel").iterdir())  # no version, no temp dir left
    with open_store(ws, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM dataset_versions") == 0
    assert export(ws).version == 1


def test_killed_cli_export_leaves_no_version(ws: Workspace, cli) -> None:
    """SIGKILL mid-write: nothing published; the next export clears the leftovers and writes v1."""
    root = ws.datasets_dir / "rel"
    proc = subprocess.Popen([*COTGEN, "export", "rel", "--kind", "all", "-w", str(ws.root)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            temps = list(root.glob(".v1.tmp-*")) if root.is_dir() else []
            if temps and any(temps[0].rglob("*.arrow")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the export finished before it could be interrupted"
    assert list(root.glob(".v1.tmp-*")) and not (root / "v1").exists()
    out = json.loads(cli("export", "rel", "--kind", "all", "-w", str(ws.root), "--json").stdout)
    assert out["version"] == 1 and out["created"]
    assert [p.name for p in root.iterdir()] == ["v1"]
    listed = json.loads(cli("datasets", "list", "-w", str(ws.root), "--json").stdout)
    assert [(v["name"], v["version"], v["registered"]) for v in listed] == [("rel", 1, True)]


def test_cli_export_show_diff(ws: Workspace, cli, tmp_path: Path, base: Path) -> None:
    first = json.loads(cli("export", "rel", "--kind", "sft,dpo", "--format", "cot_first", "-w", str(ws.root),
                           "--json").stdout)
    copy = copy_workspace(base, tmp_path / "copy")
    same = json.loads(cli("export", "rel", "--kind", "sft", "--kind", "dpo", "--format", "cot_first", "-w",
                          str(copy.root), "--json").stdout)
    assert same["content_hash"] == first["content_hash"]  # stable across processes and workspace copies
    sft = load_from_disk(str(ws.datasets_dir / "rel" / "v1" / "sft"))["train"][0]
    assert sft["completion"][0]["content"].endswith(f"Label: {sft['label']}")
    assert sft["prompt"][0]["role"] == "system" and "Query:" in sft["prompt"][-1]["content"]
    with open_store(ws) as store:
        sid, pair_id = store.one("SELECT sample_id, pair_id FROM samples WHERE run_id = 'run-policy-1' "
                                 "AND sample_id IN (SELECT rejected_sample_id FROM read_parquet(?))",
                                 [str(ws.datasets_dir / "rel" / "v1" / "data" / "dpo" / "train.parquet")])
        add_review(store, "reject", pair_id, sample_id=sid)
    second = json.loads(cli("export", "rel", "--kind", "sft,dpo", "--format", "cot_first", "-w", str(ws.root),
                            "--json").stdout)
    assert second["version"] == 2
    shown = json.loads(cli("datasets", "show", "rel@v2", "-w", str(ws.root), "--json").stdout)
    assert shown["parent"] == 1 and shown["content_hash"] == second["content_hash"]
    diff = json.loads(cli("datasets", "diff", "rel", "v1", "v2", "-w", str(ws.root), "--json").stdout)
    dpo = diff["kinds"]["dpo"]
    assert pair_id in dpo["changed"]["examples"] + dpo["removed"]["examples"]
    assert dpo["added"]["pairs"] == 0 and diff["kinds"]["sft"]["changed"]["pairs"] == 0
    text = cli("datasets", "diff", "rel", "v1", "v2", "-w", str(ws.root)).stdout
    assert "changed" in text
    bad = cli("export", "rel", "--kind", "ppo", "-w", str(ws.root), check=False)
    assert bad.returncode == 2 and "'ppo' is not a kind" in bad.stderr
    missing = cli("datasets", "show", "rel@v9", "-w", str(ws.root), check=False)
    assert missing.returncode == 2 and "has no v9" in missing.stderr


def test_nothing_to_export_writes_nothing(tmp_path: Path, shared_data: Path) -> None:
    ws = ingest_crowdflower(tmp_path / "ws", shared_data)
    result = export(ws)
    assert result.version is None and not result.created
    assert not (ws.datasets_dir / "rel").exists() or not list((ws.datasets_dir / "rel").iterdir())


def test_pipeline_stages_curate_and_export(ws: Workspace, cli) -> None:
    first = json.loads(cli("run", "--stage", "curate", "--stage", "export", "-w", str(ws.root), "--json").stdout)
    assert first["curate"]["difficulty"]["policy-1"] and first["export"]["version"] == 1
    again = json.loads(cli("run", "--stage", "export", "-w", str(ws.root), "--json").stdout)
    assert again["export"]["version"] == 1 and not again["export"]["created"]
    assert again["export"]["content_hash"] == first["export"]["content_hash"]



def test_every_dropped_row_on_record(ws: Workspace) -> None:
    """dropped.parquet: each teacher sample is an SFT row or dropped with a reason; each policy pair a GRPO row or
    dropped; the manifest and the card count the same reasons."""
    result = export(ws)
    dropped = pq.read_table(result.path / "dropped.parquet").to_pylist()
    assert dropped and {r["kind"] for r in dropped} <= set(ALL)
    by_reason: dict[str, dict[str, int]] = {}
    for r in dropped:
        by_reason.setdefault(r["kind"], {}).setdefault(r["reason"], 0)
        by_reason[r["kind"]][r["reason"]] += 1
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["dropped"]["counts"] == by_reason == result.dropped
    assert {"disagrees_with_gold", "over_per_pair"} <= set(by_reason["sft"])
    assert {"all_wrong", "all_correct", "too_easy", "balanced_out"} <= set(by_reason["grpo"])
    with open_store(ws, read_only=True) as store:
        teacher = {s for (s,) in store.rows("SELECT sample_id FROM samples WHERE run_id = 'run-teacher-1'")}
        policy_pairs = {p for (p,) in store.rows("SELECT DISTINCT pair_id FROM samples WHERE run_id = 'run-policy-1'")}
    sft_rows = set(pq.read_table(result.path / "data" / "sft", columns=["sample_id"])["sample_id"].to_pylist())
    sft_dropped = [r["sample_id"] for r in dropped if r["kind"] == "sft"]
    assert len(sft_dropped) == len(set(sft_dropped)) and not sft_rows & set(sft_dropped)
    assert sft_rows | set(sft_dropped) == teacher
    grpo_rows = set(pq.read_table(result.path / "data" / "grpo", columns=["pair_id"])["pair_id"].to_pylist())
    grpo_dropped = {r["pair_id"] for r in dropped if r["kind"] == "grpo"}
    assert not grpo_rows & grpo_dropped and grpo_rows | grpo_dropped == policy_pairs
    card = (result.path / "README.md").read_text()
    assert "## Dropped rows" in card
    assert all(f"| {kind} | {reason} | {n} |" in card for kind, by in by_reason.items() for reason, n in by.items())


def test_eval_carries_every_labelled_pair_of_each_split(ws: Workspace) -> None:
    """Splits cover every labelled pair (with samples or not, grouped by query); `eval` holds each one with the
    policy prompt and the gold label, so evaluation is not limited to pairs some selection kept."""
    result = export(ws, kinds=["sft"])
    evaluation = load_from_disk(str(result.path / "eval"))
    split_of = {r["query_id"]: r["split"] for r in pq.read_table(result.path / "splits.parquet").to_pylist()}
    with open_store(ws, read_only=True) as store:
        gold = {p: (q, label) for p, q, label in store.rows("SELECT pair_id, query_id, label FROM gold_pairs")}
        sampled = {p for (p,) in store.rows("SELECT DISTINCT pair_id FROM samples")}
    assert set(split_of) == {q for q, _ in gold.values()}
    for split in ("train", "validation", "test"):
        rows = evaluation[split]
        assert rows.column_names == ["pair_id", "query_id", "prompt", "label", "scheme"]
        expected = {p for p, (q, _) in gold.items() if split_of[q] == split}
        assert set(rows["pair_id"]) == expected and rows.num_rows == len(expected)
        assert all(gold[r["pair_id"]][1] == r["label"] for r in rows)
        assert set(rows["label"]) == {"L1", "L2", "L3", "L4"}  # stratified: every grade in every split
    test = evaluation["test"]
    assert test[0]["prompt"][-1]["role"] == "user" and test[0]["scheme"] == "crowdflower"
    sft_test = set(load_from_disk(str(result.path / "sft"))["test"]["pair_id"])
    assert sft_test < set(test["pair_id"]) and len(set(test["pair_id"]) - sampled) > len(sft_test)


def test_diff_on_a_metadata_only_change_names_the_columns(ws: Workspace, cli) -> None:
    """Reordering the curriculum moves every row's stage and no text: the diff says so, column by column."""
    export(ws, kinds=["sft", "grpo"])
    reordered = with_curation(ws, curriculum=["unsolved", "hard", "medium", "easy"])
    assert export(reordered, kinds=["sft", "grpo"]).version == 2
    diff = json.loads(cli("datasets", "diff", "rel", "v1", "v2", "-w", str(ws.root), "--json").stdout)
    sft = diff["kinds"]["sft"]["changed"]
    assert sft["pairs"] > 10 and sft["text"] == 0 and sft["metadata_only"] == sft["pairs"]
    assert sft["columns"] == {"stage": sft["pairs"]}
    assert sft["more"] == sft["pairs"] - len(sft["examples"]) and len(sft["examples"]) == 10
    assert diff["kinds"]["eval"]["changed"]["pairs"] == 0
    text = " ".join(cli("datasets", "diff", "rel", "v1", "v2", "-w", str(ws.root)).stdout.split())  # unwrapped
    assert f"sft changed columns: stage ({sft['pairs']:,} pairs)" in text and f"and {sft['more']:,} more" in text
    shown = cli("datasets", "show", "rel@v2", "-w", str(ws.root)).stdout
    assert "selection config" in shown and "curation.curriculum" in shown and "curation.difficulty.gamma" in shown
