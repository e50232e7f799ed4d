"""Teacher CoT from the real SmolLM2: through `transformers serve` (openai backend) and in-process (transformers).

20 CrowdFlower pairs, N=2 each. On CPU the prompt prefill dominates, so the workspace uses a compact
teacher template (tests/generation_teacher_compact.j2: same blocks and variables as teacher.v1) and
short answers; what is checked is the run: counts, keys, stored raw text, parse statuses.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_generation import configure, crowdflower_workspace, transformers_server

from cotgen.backends.base import Job, Outcome, SamplingParams
from cotgen.backends.transformers import TransformersBackend
from cotgen.prompting import json_keys
from curation.store import Store
from schemas.answer import parse_answer
from schemas.labels import BUILTIN_SCHEMES

from conftest import run_cli

PAIRS, N, MAX_TOKENS = 20, 2, 8
COMPACT_TEACHER = Path(__file__).parent / "generation_teacher_compact.j2"
STATUSES = {"ok", "partial", "no_label", "empty", "error"}


@pytest.fixture(scope="session")
def cf_template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return crowdflower_workspace(tmp_path_factory.getbasetemp(), shared_data)


@pytest.fixture(scope="session")
def served(smollm2_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`transformers serve` with SmolLM2 on loopback for the whole session."""
    with transformers_server(smollm2_path, tmp_path_factory.mktemp("serve") / "serve.log", threads=1) as url:
        yield url


@pytest.fixture
def ws(cf_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(cf_template, target)
    # One torch thread: on a CPU shared with other test processes, more threads mostly wait on each other.
    # Free text (structured = false): the structured path has its own test below.
    configure(target, "teacher", prompt=str(COMPACT_TEACHER), max_tokens=MAX_TOKENS, n=N, temperature=0.7, batch_size=8,
              timeout_s=600.0, threads=1, structured=False)
    return target


def check_run(ws: Path, summary: dict) -> list[tuple]:
    """Counts, keys, stored raw text and parse statuses of a finished teacher run."""
    assert (summary["planned"], summary["completed"], summary["failed"], summary["status"]) == (PAIRS * N, PAIRS * N, 0, "done")
    assert summary["store"]["samples"] == PAIRS * N and summary["store"]["pairs"] == PAIRS
    assert summary["prompt"] == f"teacher:{COMPACT_TEACHER.name}"
    with Store(ws / "store.duckdb", read_only=True) as store:
        rows = store.rows(
            "SELECT s.sample_id, s.pair_id, s.sample_index, s.parse_status, s.predicted_label, s.rule_ids, c.text, "
            "c.finish_reason, c.tokens_out, c.run_id = s.run_id "
            "FROM samples s JOIN completions c ON c.request_key = s.sample_id ORDER BY s.pair_id, s.sample_index")
    assert len(rows) == PAIRS * N and len({r[0] for r in rows}) == PAIRS * N
    assert {(r[1], r[2]) for r in rows} == {(p, i) for p in {r[1] for r in rows} for i in range(N)}
    assert {r[3] for r in rows} <= STATUSES
    assert all(r[7] in ("stop", "length") and 0 < r[8] <= MAX_TOKENS + 1 and r[9] for r in rows)
    assert all(len(r[5]) == 2 for r in rows)
    assert sum(bool(r[6].strip()) for r in rows) >= PAIRS, "the model wrote text"
    scheme = BUILTIN_SCHEMES["crowdflower"]
    for r in rows:  # the stored status and label are what the raw text parses to
        parsed = parse_answer(r[6], scheme)
        assert (parsed.status, parsed.label) == (r[3], r[4])
    return rows


@pytest.mark.slow
def test_teacher_cot_through_transformers_serve(ws: Path, served: str, smollm2_path: str) -> None:
    proc = run_cli("generate", "-w", str(ws), "--backend", "openai", "--base-url", served, "--model", smollm2_path,
                   "--limit", str(PAIRS), "--concurrency", "2", "--json")
    summary = json.loads(proc.stdout)
    check_run(ws, summary)
    assert summary["requests"] == PAIRS * N, "transformers serve ignores n: one request per sample"
    assert summary["tokens_in"] > 0 and summary["tokens_out"] > 0
    again = json.loads(run_cli("generate", "-w", str(ws), "--backend", "openai", "--base-url", served, "--model",
                               smollm2_path, "--limit", str(PAIRS), "--json").stdout)
    assert (again["completed"], again["already_done"], again["requests"]) == (0, PAIRS * N, 0)


@pytest.mark.slow
def test_teacher_cot_through_transformers_backend(ws: Path) -> None:
    proc = run_cli("generate", "-w", str(ws), "--backend", "transformers", "--model", "bundled:smollm2-135m-instruct",
                   "--limit", str(PAIRS), "--json")
    summary = json.loads(proc.stdout)
    check_run(ws, summary)
    assert summary["requests"] == PAIRS * N // 8, "batches of batch_size samples"


@pytest.mark.slow
def test_structured_answers_from_a_local_model_are_valid_json(ws: Path) -> None:
    """structured = true on the transformers backend: keys forced, values written, the label one of the scheme's."""
    configure(ws, "teacher", structured=True, order="label_first", max_tokens=80, n=1)
    proc = run_cli("generate", "-w", str(ws), "--limit", "4", "--json")
    summary = json.loads(proc.stdout)
    assert (summary["completed"], summary["failed"]) == (4, 0)
    scheme = BUILTIN_SCHEMES["crowdflower"]
    with Store(ws / "store.duckdb", read_only=True) as store:
        rows = store.rows("SELECT s.parse_status, s.predicted_label, c.text, c.tokens_out "
                          "FROM samples s JOIN completions c ON c.request_key = s.sample_id")
    assert len(rows) == 4
    for status, label, text, tokens_out in rows:
        answer = json.loads(text)
        assert list(answer) == json_keys("label_first"), "keys in the answer order: label first"
        assert answer["label"] in scheme.ids and (status, label) == ("ok", answer["label"])
        assert all(isinstance(v, str) for v in answer.values())
        assert 0 < tokens_out <= 5 * 16 + 3, "each of the five steps keeps to its share of max_tokens"


class StopAfter(threading.Event):
    """A stop signal that arrives on its `checks`-th look: Ctrl-C in the middle of a batch, without sleeps."""

    def __init__(self, checks: int):
        super().__init__()
        self.checks, self.looks = checks, 0

    def is_set(self) -> bool:
        self.looks += 1
        if self.looks >= self.checks:
            self.set()
        return super().is_set()


@pytest.mark.parametrize("structured", [False, True], ids=["free-text", "structured"])
def test_stop_cuts_a_local_generate_short_and_keeps_nothing_half_written(smollm2_path: str, structured: bool) -> None:
    """The torch generate call ends within a token of the stop (so Ctrl-C exits at once) and emits nothing."""
    schema = {"type": "object", "properties": {"steps": {"type": "string"}, "label": {"enum": ["L1", "L4"]}}}
    params = SamplingParams(max_tokens=1500, temperature=0.0, json_schema=schema if structured else None)
    job = Job(pair_id="p0", messages=({"role": "user", "content": "Count from 1 to 1000, one number per line."},),
              params=params, samples=((0, "a0"), (1, "a1")))
    backend = TransformersBackend("smollm2", smollm2_path, batch_size=2, threads=1)
    out: list[Outcome] = []
    stop = StopAfter(checks=3)
    backend.run(iter([job]), out.append, stop)
    assert out == [], "a batch cut short is not emitted: its answers are incomplete"
    assert stop.looks < 10, "generation looked at the stop signal token by token and ended there"
