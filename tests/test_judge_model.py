"""The step judge with the bundled SmolLM2 on CPU (transformers backend): a run killed with SIGKILL keeps its
finished batches and the re-run judges only the rest; keys are the planned ones, every verdict parses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers_curation import copy_workspace, ingest_crowdflower, pairs_of_queries, synth_run
from helpers_generation import configure
from helpers_judge import judged_count

from cotgen.app.judge import plan_judgements
from cotgen.judge import load_judge_prompt
from curation.judge import judge_candidates
from curation.store import open_store
from schemas.workspace import Workspace

from conftest import COTGEN, run_cli

pytestmark = pytest.mark.slow
COTS = 3


def test_judge_with_bundled_model_survives_sigkill(tmp_path: Path, shared_data: Path, smollm2_path: str) -> None:
    ws = copy_workspace(ingest_crowdflower(tmp_path / "base", shared_data).root, tmp_path / "ws")
    with open_store(ws) as store:
        synth_run(store, pairs_of_queries(store, 2)[:COTS], "teacher-1", "teacher", 1, "cot_first")
    # One CoT per batch so batches land one by one; short reasons and one thread (a busy CPU) keep it quick.
    configure(ws.root, "judge", batch_size=1, max_tokens=48, threads=1)
    ws = Workspace.open(ws.root)
    with open_store(ws, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM samples") == COTS

    proc = subprocess.Popen([*COTGEN, "judge", "-w", str(ws.root), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    deadline = time.monotonic() + 600
    while judged_count(ws) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, f"the judge ended before it could be killed: {proc.communicate()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = judged_count(ws)
    assert 1 <= kept < COTS

    summary = json.loads(run_cli("judge", "-w", str(ws.root), "--json", timeout=900).stdout)
    assert summary["status"] == "done" and summary["already_done"] == kept
    assert summary["judged"] == COTS - kept and summary["steps_judged"] == 5 * (COTS - kept)
    # The field decoder picks every verdict among the schema's values: all of them parse.
    assert summary["store"]["judgements"] == COTS and summary["store"]["status"] == {"ok": COTS}
    assert summary["store"]["parse_rate"] == 1.0

    with open_store(ws, read_only=True) as store:
        candidates = judge_candidates(store, "teacher", [])
        stored = store.query("SELECT judge_key, sample_id, status FROM judgements")
        verdicts = store.rows("SELECT count(*), count(DISTINCT (sample_id, step_index)) FROM step_verdicts "
                              "WHERE correct IS NOT NULL")[0]
    plan, _ = plan_judgements(ws, ws.config.judge.model_copy(update={"model": ws.model(ws.config.judge.model)}),
                              load_judge_prompt(), candidates, {})
    assert {r["judge_key"] for r in stored} == set(plan.keys())
    assert sorted(r["sample_id"] for r in stored) == sorted(c.sample_id for c in candidates)
    assert verdicts == (5 * COTS, 5 * COTS)
