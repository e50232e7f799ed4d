"""The data report on a real store: plots written into every exported version and embedded in its card;
`cotgen report` for the whole store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_curation import build_store, ingest_crowdflower, plain_prompt
from PIL import Image

from curation.export import export_dataset
from curation.report import PLOTS, PLOTS_DIR
from curation.store import open_store
from schemas.workspace import Workspace

from conftest import run_cli

RULES = ["no-brand", "gift-recipient", "size-mismatch"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Workspace:
    ws = ingest_crowdflower(tmp_path_factory.mktemp("report") / "ws", shared_data)
    build_store(ws, n_queries=8)
    with open_store(ws) as store:  # teacher prompts store the rules retrieved per pair
        pairs = [p for (p,) in store.rows("SELECT DISTINCT pair_id FROM samples ORDER BY pair_id LIMIT 5")]
        for i, pair_id in enumerate(pairs):
            store.con.execute("INSERT INTO retrievals VALUES ('fp', ?, ?, ?)", [pair_id, RULES[: 1 + i % 3], [0.5] * (1 + i % 3)])
    return ws


@pytest.fixture(scope="module")
def version(ws: Workspace) -> Path:
    """The first version of [export].name, exported through the library as every export path does."""
    return export_dataset(ws, ws.config.export.name, ["sft", "dpo", "grpo"], "label_first", plain_prompt).path


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()
        assert image.size[0] >= 600 and image.size[1] >= 400


def test_every_export_writes_the_plots_its_card_embeds(version):
    card = (version / "README.md").read_text(encoding="utf-8")
    for name, caption in PLOTS.items():
        assert_png(version / PLOTS_DIR / name)
        assert f"![{caption}]({PLOTS_DIR}/{name})" in card


def test_report_command_covers_the_store(ws, version, tmp_path):
    out = tmp_path / "out"
    report = json.loads(run_cli("report", "-w", str(ws.root), "-o", str(out), "--json").stdout)
    assert [Path(p).name for p in report["plots"]] == list(PLOTS)
    for path in report["plots"]:
        assert_png(Path(path))
    with open_store(ws, read_only=True) as store:
        total = store.scalar("SELECT count(*) FROM pairs")
    assert sum(sum(d.values()) for d in report["labels_by_split"].values()) == total
    assert set(report["labels_by_split"]) == {"train", "validation", "test"}, "the latest version's splits"
    assert report["scope"] == f"whole store, splits of {ws.config.export.name} v1"
    assert report["pass_at_k"]["policy-1"].keys() == {"1", "2", "3", "4"}
    pass_k = [report["pass_at_k"]["policy-1"][k] for k in "1234"]
    assert pass_k == sorted(pass_k), "pass@k never falls as k grows"
    assert report["agreement"]["teacher-1"]["gold_shown"] is False
    assert set(report["agreement"]["teacher-1"]["by_label"]) == {"L1", "L2", "L3", "L4"}
    assert report["rules"][0] == {"rule": "no-brand", "pairs": 5} and report["retrieval_pairs"] == 5
