"""Small exported dataset versions in the export layout, built from real CrowdFlower pairs.

Used by the training tests and bench/quality.py. Answers are rendered with schemas.answer.render_answer;
the reasoning is a short template written from the gold label (no teacher CoT offline).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import defaultdict
from pathlib import Path

from datasets import Dataset, DatasetDict

from schemas.answer import AnswerOrder, render_answer
from schemas.labels import BUILTIN_SCHEMES, LabelScheme
from schemas.sample import Step

SCHEME = BUILTIN_SCHEMES["crowdflower"]
SPLITS = ("train", "validation", "test")
# Short on purpose: on this CPU a forward pass costs about 3 s per 300 prompt tokens.
SYSTEM = "Grade how relevant the item is to the search query: {grades}. Start with `Label: <grade>`, then reason in five steps."
_TAG = re.compile(r"<[^>]+>")


def crowdflower_pairs(csv_path: Path, limit: int | None = None, seed: int = 0, description_chars: int = 0) -> list[dict]:
    """CrowdFlower rows as pairs (query, title, description, label L1..L4), in a seeded order."""
    with csv_path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(seed).shuffle(rows)
    pairs = []
    for row in rows[:limit] if limit else rows:
        pairs.append({
            "pair_id": hashlib.sha1(f"crowdflower:{row['id']}".encode()).hexdigest()[:16],
            "query_id": hashlib.sha1(row["query"].strip().lower().encode()).hexdigest()[:16],
            "query": row["query"].strip(),
            "title": row["product_title"].strip(),
            "description": " ".join(_TAG.sub(" ", row["product_description"]).split())[:description_chars],
            "label": SCHEME.raw_lookup()[row["median_relevance"].strip()],
        })
    return pairs


def split_by_query(pairs: list[dict], seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> dict[str, list[dict]]:
    """Train/validation/test with no query in two splits."""
    queries = sorted({p["query_id"] for p in pairs})
    random.Random(seed).shuffle(queries)
    cut1, cut2 = round(len(queries) * fractions[0]), round(len(queries) * (fractions[0] + fractions[1]))
    where = {q: "train" if i < cut1 else "validation" if i < cut2 else "test" for i, q in enumerate(queries)}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for p in pairs:
        out[where[p["query_id"]]].append(p)
    return out


def prompt_messages(pair: dict, scheme: LabelScheme = SCHEME) -> list[dict]:
    grades = ", ".join(f"{g.id} {g.name}" for g in scheme.grades)
    item = pair["title"] + (f"\nDescription: {pair['description']}" if pair["description"] else "")
    return [
        {"role": "system", "content": SYSTEM.format(grades=grades)},
        {"role": "user", "content": f"Query: {pair['query']}\nItem: {item}"},
    ]


def template_steps(pair: dict, label: str, scheme: LabelScheme = SCHEME) -> list[Step]:
    """Five short steps that argue for `label` (template text, not a teacher's reasoning)."""
    grade = scheme.grade(label)
    return [
        Step(name="query_understanding", text=f"The user searches for \"{pair['query']}\"."),
        Step(name="item_understanding", text=f"The item is \"{pair['title'][:60]}\"."),
        Step(name="category_matching", text="The category fits the query." if scheme.is_relevant(label)
             else "The category does not fit the query."),
        Step(name="attribute_matching", text="The attributes match." if label == scheme.ids[0]
             else "Some attributes differ or are unstated."),
        Step(name="relevance_judgement", text=f"{grade.name}, so the grade is {label}."),
    ]


def answer(pair: dict, label: str, order: AnswerOrder, scheme: LabelScheme = SCHEME) -> str:
    return render_answer(template_steps(pair, label, scheme), label, order)


def wrong_label(label: str, scheme: LabelScheme = SCHEME) -> str:
    ids = scheme.ids
    return ids[(ids.index(label) + 2) % len(ids)]


def _rows(kind: str, pairs: list[dict], order: AnswerOrder, scheme: LabelScheme) -> dict[str, list]:
    rows: dict[str, list] = defaultdict(list)
    for p in pairs:
        prompt = prompt_messages(p, scheme)
        good = answer(p, p["label"], order, scheme)
        bad = answer(p, wrong_label(p["label"], scheme), order, scheme)
        common = {"prompt": prompt, "pair_id": p["pair_id"]}
        if kind == "sft":
            row = {**common, "completion": [{"role": "assistant", "content": good}], "query_id": p["query_id"],
                   "label": p["label"], "stage": 1, "reasoning_content": good}
        elif kind == "dpo":
            row = {**common, "chosen": [{"role": "assistant", "content": good}],
                   "rejected": [{"role": "assistant", "content": bad}], "label": p["label"]}
        elif kind == "grpo":
            row = {**common, "label": p["label"], "difficulty": "medium", "scheme": scheme.name, "stage": 1}
        elif kind == "eval":
            row = {**common, "query_id": p["query_id"], "label": p["label"], "scheme": scheme.name}
        else:
            steps = [f"{i}. {s.name.replace('_', ' ').capitalize()}: {s.text}"
                     for i, s in enumerate(template_steps(p, wrong_label(p["label"], scheme), scheme), start=1)]
            row = {**common, "completions": steps, "labels": [True, True, False, False, False]}
        for k, v in row.items():
            rows[k].append(v)
    return rows


def write_export(datasets_dir: Path, name: str, splits: dict[str, list[dict]], order: AnswerOrder = "label_first",
                 kinds: tuple[str, ...] = ("sft", "dpo", "grpo", "steps"), version: int = 1,
                 scheme: LabelScheme = SCHEME, eval_splits: dict[str, list[dict]] | None = None) -> Path:
    """datasets/NAME/vK/{manifest.json, <kind>/} exactly as `cotgen export` lays a version out; `eval_splits`
    (every labelled pair of each split) adds the `eval` set."""
    root = datasets_dir / name / f"v{version}"
    root.mkdir(parents=True, exist_ok=True)
    sets = {kind: splits for kind in kinds}
    if eval_splits is not None:
        sets["eval"] = eval_splits
        kinds = (*kinds, "eval")
    for kind, rows in sets.items():
        DatasetDict({s: Dataset.from_dict(_rows(kind, rows[s], order, scheme)) for s in SPLITS}).save_to_disk(
            str(root / kind))
    digest = hashlib.sha256(json.dumps(splits, sort_keys=True).encode()).hexdigest()
    manifest = {
        "name": name, "version": version, "content_hash": digest, "parent": None, "format": order,
        "scheme": scheme.model_dump(), "kinds": list(kinds),
        "counts": {k: {s: len(sets[k][s]) for s in SPLITS} for k in kinds},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


class LoopbackJudge:
    """An OpenAI-compatible judge server on 127.0.0.1 for tests: every chat request gets the same verdicts.

    `verdicts` maps a step name to "correct" / "incorrect"; every request body is kept in `requests`.
    """

    def __init__(self, verdicts: dict[str, str]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.verdicts = verdicts
        self.requests: list[dict] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": "judge", "object": "model", "owned_by": "test"}]})

            def do_POST(self) -> None:
                judge.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                content = {k: v for name, verdict in judge.verdicts.items()
                           for k, v in ((f"{name}_reason", f"fixed verdict for {name}"), (name, verdict))}
                self._send({"id": "c", "object": "chat.completion", "created": 0, "model": "judge",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": json.dumps(content)}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> LoopbackJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
