"""`cotgen generate` end to end against loopback servers: resumable runs, budgets, SIGKILL, faults, errors.

The real CLI runs in a subprocess on a workspace with CrowdFlower ingested and the rule index built;
the LLM is a small loopback server (tests/helpers_generation.py) that answers well-formed CoT, so
these tests are about the run, not the model (test_generation_models.py uses SmolLM2).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers_generation import configure, crowdflower_workspace, fake_server, fresh_workspace, received_keys

from curation.store import Store

from conftest import COTGEN, ROOT, run_cli, store_rows


@pytest.fixture(scope="session")
def cf_template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return crowdflower_workspace(tmp_path_factory.getbasetemp(), shared_data)


@pytest.fixture
def ws(cf_template: Path, tmp_path: Path) -> Path:
    return fresh_workspace(cf_template, tmp_path / "ws")


def generate(ws: Path, url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("generate", "-w", str(ws), "--base-url", url, "--json", *args, check=check)


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


def last_json(stdout: str) -> dict:
    """The JSON document `cotgen run --json` ends with (stages print their own tables before it)."""
    return json.loads(stdout[stdout.rindex("\n{\n") + 1:] if not stdout.startswith("{") else stdout)


def test_teacher_run_is_keyed_stored_and_resumable(ws: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    with fake_server(log_path=log) as url:
        first = summary(generate(ws, url, "--limit", "20", "-n", "2"))
        assert (first["planned"], first["completed"], first["failed"], first["status"]) == (40, 40, 0, "done")
        assert first["requests"] == 20, "n=2 in one request where the server honours it"
        st = first["store"]
        assert (st["samples"], st["pairs"], st["parse_status"]) == (40, 20, {"ok": 40})
        assert st["agreement"] == pytest.approx(st["correct"] / 40)

        stored = store_rows(ws, "SELECT s.sample_id, s.sample_index, s.rule_ids, s.gold_label, s.correct, s.predicted_label, "
                          "c.text, c.request, s.run_id = c.run_id FROM samples s JOIN completions c ON c.request_key = s.sample_id")
        assert len(stored) == 40 and len({r[0] for r in stored}) == 40
        assert sorted(received_keys(log)) == sorted(r[0] for r in stored), "every stored key was sent exactly once"
        assert {r[1] for r in stored} == {0, 1}
        assert all(len(r[2]) == 2 for r in stored), "the k=2 retrieved rule ids are kept per sample"
        assert all(r[4] == (r[5] == r[3]) for r in stored)
        assert all(r[6].endswith(f"Label: {r[5]}") for r in stored)
        assert all(json.loads(r[7])["model"] == "fake" and r[8] for r in stored)
        run = store_rows(ws, "SELECT name, role, status, prompt_name, json_extract_string(params, '$.order') FROM runs")
        assert run == [(first["run"], "teacher", "done", "teacher.v1", "cot_first")]

        again = summary(generate(ws, url, "--limit", "20", "-n", "2"))
        assert (again["completed"], again["already_done"], again["requests"]) == (0, 40, 0)
        more = summary(generate(ws, url, "--limit", "20", "-n", "3"))
        assert (more["completed"], more["already_done"], more["run"]) == (20, 40, first["run"])
        other = generate(ws, url, "--limit", "20", "-n", "2", "--run", "another", check=False)
        assert other.returncode == 0 and summary(other)["answered_elsewhere"] == 40
        told = run_cli("generate", "-w", str(ws), "--base-url", url, "--limit", "20", "-n", "2", "--run", "another")
        assert "40 samples were already answered in another run" in " ".join(told.stdout.split())
    keys = received_keys(log)
    assert len(keys) == len(set(keys)) == 60


def test_budget_stops_gracefully_and_the_rest_follows(ws: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    with fake_server(log_path=log) as url:
        capped = summary(generate(ws, url, "--role", "policy", "--limit", "10", "-n", "2", "--max-requests", "5"))
        assert (capped["completed"], capped["status"], capped["missing"]) == (5, "stopped", 15)
        assert "request budget" in capped["stop_reason"]
        assert store_rows(ws, "SELECT status FROM runs") == [("stopped",)]
        rest = summary(generate(ws, url, "--role", "policy", "--limit", "10", "-n", "2"))
        assert (rest["completed"], rest["already_done"], rest["status"]) == (15, 5, "done")
    keys = received_keys(log)
    assert len(keys) == len(set(keys)) == 20
    assert store_rows(ws, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(20, 20)]


def start_and_wait(args: list[str], log: Path, requests: int) -> subprocess.Popen:
    """Start `cotgen ARGS` and return once the server has had `requests` requests: with one request in flight at a
    time and batches written every second, several batches are stored by then and more requests are to come."""
    proc = subprocess.Popen([*COTGEN, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    deadline = time.monotonic() + 120
    while len(received_keys(log)) < requests and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be stopped"
    return proc


def test_sigkill_midway_then_rerun_loses_and_repeats_nothing(ws: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    args = ["generate", "-w", str(ws), "--role", "policy", "--limit", "20", "-n", "2", "--concurrency", "1", "--json"]
    with fake_server(log_path=log, latency_s=0.3) as url:
        proc = start_and_wait([*args, "--base-url", url], log, requests=12)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = {r[0] for r in store_rows(ws, "SELECT sample_id FROM samples")}
        assert 0 < len(before) < 40, "killed midway"
        sent_before = len(received_keys(log))
        done = summary(run_cli(*args, "--base-url", url))
    assert (done["already_done"], done["completed"], done["store"]["samples"]) == (len(before), 40 - len(before), 40)
    resent = set(received_keys(log)[sent_before:]) & before
    assert not resent, "a stored key was sent again"
    assert store_rows(ws, "SELECT count(*), count(DISTINCT sample_id) FROM samples") == [(40, 40)]
    assert store_rows(ws, "SELECT count(*), count(DISTINCT request_key) FROM completions") == [(40, 40)]
    assert store_rows(ws, "SELECT count(*) FROM samples s ANTI JOIN completions c ON c.request_key = s.sample_id") == [(0,)]


def test_faults_are_retried_accounted_and_never_a_traceback(ws: Path, tmp_path: Path) -> None:
    with fake_server(faults="429x2,500,hang,truncated", retry_after="0.3") as url:
        proc = generate(ws, url, "--role", "policy", "--limit", "6", "-n", "1", "--concurrency", "2")
    s = summary(proc)
    assert (s["completed"], s["failed"], s["status"]) == (6, 0, "done")
    assert s["retries"] == {"429": 2, "500": 1, "timeout": 1, "bad_json": 1}
    assert "Traceback" not in proc.stderr

    configure(ws, "policy", max_retries=0)
    with fake_server(faults="500,500") as url:
        failing = generate(ws, url, "--role", "policy", "--limit", "8", "-n", "1", "--concurrency", "1", check=False)
        assert failing.returncode == 1 and "Traceback" not in failing.stderr
        f = summary(failing)
        assert (f["completed"], f["failed"], f["failures"], f["status"]) == (0, 2, {"500": 2}, "failed")
        healed = summary(generate(ws, url, "--role", "policy", "--limit", "8", "-n", "1"))
    assert (healed["completed"], healed["already_done"], healed["status"]) == (2, 6, "done")


def test_user_errors_are_one_line(ws: Path) -> None:
    shutil.rmtree(ws / "indexes")
    missing = run_cli("generate", "-w", str(ws), "--base-url", "http://127.0.0.1:9/v1", check=False)
    assert missing.returncode == 2 and "cotgen index build" in missing.stderr and "Traceback" not in missing.stderr
    down = run_cli("generate", "-w", str(ws), "--role", "policy", "--base-url", "http://127.0.0.1:9/v1", "--limit", "1", check=False)
    assert down.returncode == 2 and "cannot reach http://127.0.0.1:9/v1" in down.stderr and "Traceback" not in down.stderr
    bad = run_cli("generate", "-w", str(ws), "--role", "critic", check=False)
    assert bad.returncode == 2 and "--role" in bad.stderr


def test_run_identity_and_stage(ws: Path, tmp_path: Path) -> None:
    from cotgen.app.generate import GenerateOptions, run_generation
    from schemas.errors import CotgenError
    from schemas.workspace import Workspace

    with Store(ws / "store.duckdb") as store:  # the stage covers every pair: keep five
        store.con.execute("DELETE FROM pairs WHERE pair_id NOT IN (SELECT pair_id FROM pairs ORDER BY source_row LIMIT 5)")
    with fake_server() as url:
        configure(ws, "teacher", base_urls=[url], n=1)
        configure(ws, "pipeline", stages=["generate"])
        stage = last_json(run_cli("run", "-w", str(ws), "--json").stdout)["generate"]
        assert (stage["completed"], stage["failed"]) == (5, 0)
        again = last_json(run_cli("run", "-w", str(ws), "--json").stdout)["generate"]
        assert (again["completed"], again["already_done"]) == (0, 5)
        workspace = Workspace.open(ws)
        policy = workspace.config.policy.model_copy(update={"base_urls": [url]})
        named = run_generation(workspace, GenerateOptions("policy", policy, limit=3, run_name="mine")).to_dict()
        assert (named["run"], named["completed"]) == ("mine", 3 * policy.n)
        with pytest.raises(CotgenError, match="run 'mine' exists with model 'fake' \\(now 'other'\\)"):
            run_generation(workspace, GenerateOptions("policy", policy.model_copy(update={"model": "other"}), limit=3, run_name="mine"))
        with pytest.raises(CotgenError, match="run 'mine' exists with identity"):
            run_generation(workspace, GenerateOptions("policy", policy.model_copy(update={"temperature": 0.1}), limit=3, run_name="mine"))
        with pytest.raises(CotgenError, match="no pairs from source 'nope'"):
            run_generation(workspace, GenerateOptions("policy", policy, source="nope"))


def test_sigterm_stops_the_run_and_keeps_what_finished(ws: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    args = ["generate", "-w", str(ws), "--role", "policy", "--limit", "30", "-n", "2", "--concurrency", "1", "--json"]
    with fake_server(log_path=log, latency_s=0.3) as url:
        proc = start_and_wait([*args, "--base-url", url], log, requests=12)
        with Store(ws / "store.duckdb", lock_timeout_s=20) as store:  # an annotator gets in between batches
            store.con.execute("INSERT INTO reviews (review_id, annotator, action, pair_id, created_at) "
                              "VALUES ('r1', 'ann', 'note', 'p', now())")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    status, samples = store_rows(ws, "SELECT r.status, count(s.sample_id) FROM runs r LEFT JOIN samples s USING (run_id) GROUP BY ALL")[0]
    assert status == "stopped" and 0 < samples < 60
    assert store_rows(ws, "SELECT annotator FROM reviews") == [("ann",)]
