"""Review test helpers: samples written into a real store with SQL, and the real CLI driven in a pty."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pyarrow as pa
import pytest

from curation.store import Store
from schemas.answer import render_answer
from schemas.sample import STEP_NAMES, Step
from schemas.workspace import Workspace

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
# The id must be followed by another character: pexpect may match while the rest of the id is still unread.
CARD_RE = re.compile(r"item (\d+) of (\d+) · id ([0-9A-Za-z:_-]+)(?=[^0-9A-Za-z:_-])")
GRADES = ["L4", "L3", "L2", "L1"]
RULE_IDS = ["accessory-for-queried-product", "alternative-like-x"]

RUN_SQL = """
INSERT INTO runs (run_id, name, role, backend, model, prompt_name, prompt_hash, params, status)
VALUES (?, ?, 'teacher', 'transformers', 'bundled:smollm2-135m-instruct', 'teacher', 'test', ?, 'done')
"""


def _id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def steps_for(query: str, title: str, label: str) -> list[Step]:
    texts = {
        "query_understanding": f"The shopper wants {query}.",
        "item_understanding": f"The item is {title}.",
        "category_matching": "Same product category.",
        "attribute_matching": "Key attributes compared one by one.",
        "relevance_judgement": f"So the grade is {label}.",
    }
    return [Step(name=n, text=texts[n]) for n in STEP_NAMES]


@dataclass
class SeededSample:
    sample_id: str
    pair_id: str
    gold: str
    predicted: str | None
    parse_status: str
    consistent: bool


def _sample_row(run_id: str, pair: tuple, j: int) -> tuple[SeededSample, dict, dict]:
    pair_id, query, title, gold = pair
    k = int(_id(pair_id, j), 16)
    sid = "s" + _id(run_id, pair_id, j)
    if k % 7 == 0:  # an unparseable answer
        s = SeededSample(sid, pair_id, gold, None, "no_label", True)
        text, steps, probs = "I am not sure about this one.", [], None
    else:
        predicted = gold if k % 3 else GRADES[(GRADES.index(gold) + 1) % 4]
        steps = steps_for(query, title, predicted)
        consistent = k % 11 != 0
        if not consistent:
            steps[-1] = Step(name="relevance_judgement", text=f"So the grade is {GRADES[(GRADES.index(predicted) + 2) % 4]}.")
        s = SeededSample(sid, pair_id, gold, predicted, "ok", consistent)
        text = render_answer(steps, predicted, "label_first")
        rest = (1 - 0.7) / 3
        probs = {g: (0.7 if g == predicted else rest) for g in GRADES}
    sample = {"sample_id": sid, "run_id": run_id, "pair_id": pair_id, "sample_index": j,
              "steps": json.dumps([st.model_dump() for st in steps]) if steps else None,
              "predicted_label": s.predicted, "label_probs": json.dumps(probs) if probs else None,
              "parse_status": s.parse_status, "parse_reason": "" if s.predicted else "no label found",
              "consistent": s.consistent}
    completion = {"request_key": sid, "run_id": run_id, "pair_id": pair_id,  # generation keys samples by request
                  "sample_index": j, "text": text}
    return s, sample, completion


def seed_samples(ws_root: Path, run_name: str = "teacher-1", per_pair: int = 3,
                 pairs_limit: int | None = None) -> list[SeededSample]:
    """Insert one run with `per_pair` samples (and their raw completions) per pair through the real Store."""
    ws = Workspace.open(ws_root)
    run_id = "r" + _id(run_name)
    with Store(ws.store_path) as store:
        pairs = store.rows("SELECT pair_id, query, title, label FROM pairs ORDER BY pair_id")[:pairs_limit]
        has_rules = store.scalar("SELECT count(*) FROM information_schema.columns "
                                 "WHERE table_name = 'samples' AND column_name = 'rule_ids'")
        rows = [_sample_row(run_id, p, j) for p in pairs for j in range(per_pair)]
        samples = pa.Table.from_pylist([r[1] for r in rows])
        completions = pa.Table.from_pylist([r[2] for r in rows])
        with store.transaction() as con:
            con.execute(RUN_SQL, [run_id, run_name, json.dumps({"order": "label_first"})])
            con.register("new_samples", samples)
            con.register("new_completions", completions)
            cols = "sample_id, run_id, pair_id, sample_index, steps, predicted_label, label_probs, parse_status, parse_reason, consistent"
            con.execute(f"INSERT INTO samples ({cols}) SELECT {cols} FROM new_samples")
            con.execute("INSERT INTO completions (request_key, run_id, pair_id, sample_index, text) "
                        "SELECT request_key, run_id, pair_id, sample_index, text FROM new_completions")
            if has_rules:
                con.execute("UPDATE samples SET rule_ids = ? WHERE run_id = ?", [RULE_IDS, run_id])
    return [r[0] for r in rows]


def review_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": str(ROOT), "COLUMNS": "200", "LINES": "60"}
    env.pop("NO_COLOR", None)
    return {**env, **(extra or {})}


class Terminal:
    """`cotgen review` in a pseudo-terminal: read cards off the screen, press keys."""

    def __init__(self, ws: Path, annotator: str, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 60, size: tuple[int, int] = (200, 60)):
        columns, lines = size
        self.child = pexpect.spawn(sys.executable, ["-m", "cotgen.cli", "review", "-w", str(ws), "--annotator",
                                                    annotator, *args],
                                   env=review_env({"COLUMNS": str(columns), "LINES": str(lines), **(env or {})}),
                                   cwd=str(ROOT), dimensions=(lines, columns), encoding="utf-8",
                                   timeout=timeout, codec_errors="replace")

    def card(self, other_than: str | None = None) -> tuple[int, int, str]:
        """The next card drawn (position, total, item key), passing over redraws of item `other_than`."""
        while True:
            self.child.expect(CARD_RE)
            m = self.child.match
            if m.group(3) != other_than:
                return int(m.group(1)), int(m.group(2)), m.group(3)

    def press(self, key: str) -> None:
        self.child.send(key)

    def expect(self, pattern: str) -> None:
        self.child.expect(pattern)

    def finish(self) -> str:
        """Wait for the process to exit; the text it printed last."""
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.before


SVG_LINE_RE = re.compile(r'<text [^>]*clip-path="url\(#[^)]*-line-(\d+)\)"[^>]*>(.*?)</text>')


def screen_text(app: object) -> list[str]:
    """The lines on a running Textual app's screen, read from its SVG screenshot (runs of blanks dropped)."""
    lines: dict[int, list[str]] = {}
    for m in SVG_LINE_RE.finditer(app.export_screenshot()):
        lines.setdefault(int(m.group(1)), []).append(html.unescape(m.group(2)).replace("\xa0", " "))
    return ["".join(lines.get(i, [])) for i in range(max(lines, default=-1) + 1)]


def on_card(app: object) -> tuple[int, int, str]:
    """(position, total, item key) of the card on screen."""
    m = CARD_RE.search("\n".join(screen_text(app)))
    assert m, "\n".join(screen_text(app))
    return int(m.group(1)), int(m.group(2)), m.group(3)


def set_review_config(ws_root: Path, **values: object) -> None:
    """Replace the [review] section of the workspace's cotgen.toml with these values."""
    path = ws_root / "cotgen.toml"
    text = re.sub(r"(?ms)^\[review\]\n.*?(?=^\[|\Z)", "", path.read_text(encoding="utf-8"))
    lines = ["", "[review]", *(f"{k} = {json.dumps(v)}" for k, v in values.items()), ""]
    path.write_text(text + "\n".join(lines), encoding="utf-8")


EDITOR_SCRIPT = '''import sys
from pathlib import Path

# Stands in for an annotator in $EDITOR: rewrites the answer with corrected steps and label L1.
path = Path(sys.argv[1])
assert "Label:" in path.read_text() or path.read_text().strip()
path.write_text(
    "1. Query understanding: The shopper wants exactly the queried product.\\n"
    "2. Item understanding: The item is a different product.\\n"
    "3. Category matching: Wrong category.\\n"
    "4. Attribute matching: Nothing relevant matches.\\n"
    "5. Relevance judgement: Irrelevant, L1.\\n"
    "Label: L1\\n"
)
'''


def editor_command(tmp: Path) -> str:
    script = tmp / "fake_editor.py"
    script.write_text(EDITOR_SCRIPT, encoding="utf-8")
    return f"{sys.executable} {script}"


@pytest.fixture(scope="session")
def example_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`init --example` + `ingest` once per session; tests get copies (the CLI's start-up is the slow part)."""
    ws = tmp_path_factory.mktemp("review-template") / "ws"
    run_cli("init", "--example", str(ws))
    run_cli("ingest", "-w", str(ws))
    return ws


@pytest.fixture
def review_ws(example_template: Path, tmp_path: Path) -> Path:
    """A private copy of the ingested example workspace."""
    return Path(shutil.copytree(example_template, tmp_path / "ws"))
