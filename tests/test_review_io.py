"""`cotgen review import/export`: whole-file validation, one-line errors naming the line, idempotent round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import helpers_review
import pytest
from helpers_review import seed_samples

from curation.review.io import export_reviews, import_reviews
from curation.review.journal import FlushReport, append_journal, flush_workspace, journal_dir, new_review
from curation.store import Store
from schemas.errors import CotgenError
from schemas.workspace import Workspace

from conftest import store_rows

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws


def _write(path: Path, records: list[dict | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def seeded(review_ws: Path) -> tuple[Path, list]:
    return review_ws, [s for s in seed_samples(review_ws, per_pair=2) if s.parse_status == "ok"]


def _good(samples: list) -> list[dict]:
    s = samples
    return [
        {"annotator": "tool", "action": "accept", "sample_id": s[0].sample_id},
        {"annotator": "tool", "action": "reject", "sample_id": s[1].sample_id, "reason": "wrong_label"},
        {"annotator": "tool", "action": "relabel", "pair_id": s[2].pair_id, "new_label": "L2", "reason": "ambiguous"},
        {"annotator": "tool", "action": "step", "sample_id": s[3].sample_id, "step_index": 4, "step_correct": False},
        {"annotator": "tool", "action": "note", "sample_id": s[3].sample_id, "note": "unit mismatch"},
        {"annotator": "tool", "action": "edit", "sample_id": s[4].sample_id,
         "edited_text": "Label: L3\n1. Query understanding: a\n2. Item understanding: b\n3. Category matching: c\n"
                        "4. Attribute matching: d\n5. Relevance judgement: related, L3"},
    ]


@pytest.mark.parametrize(("bad", "message"), [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ({"annotator": "tool", "action": "approve", "sample_id": "x"}, "action: Input should be"),
    ({"annotator": "tool", "action": "accept", "sample_id": "no-such-sample"}, "sample_id: 'no-such-sample' is not a sample"),
    ({"annotator": "tool", "action": "reject", "sample_id": "@0", "reason": "meh"}, "reason: 'meh' is not a reject reason (wrong_label, "),
    ({"annotator": "tool", "action": "relabel", "pair_id": "@p", "new_label": "L7", "reason": "gold_wrong"}, "new_label: 'L7' is not a grade of scheme taosr4"),
    ({"annotator": "tool", "action": "edit", "sample_id": "@0", "edited_text": "looks fine to me"}, "edited_text: not a complete answer"),
    ({"annotator": "tool", "action": "step", "sample_id": "@0", "step_index": 9, "step_correct": True}, "step_index: 9 is outside"),
    ({"annotator": "tool", "action": "undo", "pair_id": "@p", "reason": "never-was"}, "reason: an undo names the review_id"),
    ({"annotator": "no spaces allowed", "action": "accept", "sample_id": "@0"}, "not a valid name"),
    ({"annotator": "tool", "action": "accept", "sample_id": "@0", "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_a_bad_line_names_its_line_and_imports_nothing(seeded, tmp_path: Path, bad, message) -> None:
    ws, samples = seeded
    if isinstance(bad, dict):
        bad = {k: (samples[0].sample_id if v == "@0" else samples[0].pair_id if v == "@p" else v)
               for k, v in bad.items()}
    path = _write(tmp_path / "decisions.jsonl", [*_good(samples)[:3], "", bad, *_good(samples)[3:]])
    with pytest.raises(CotgenError) as err:
        import_reviews(Workspace.open(ws), path)
    assert str(err.value).startswith(f"{path}:5: ") and message in str(err.value), str(err.value)
    assert store_rows(ws, "SELECT count(*) FROM reviews") == [(0,)]
    assert not list(journal_dir(Workspace.open(ws)).glob("*.jsonl"))


def test_the_cli_prints_one_line_and_exits_2(seeded, tmp_path: Path, cli) -> None:
    ws, samples = seeded
    bad = {"annotator": "tool", "action": "accept", "sample_id": "no-such-sample"}
    path = _write(tmp_path / "decisions.jsonl", [*_good(samples), bad])
    proc = cli("review", "import", str(path), "-w", str(ws), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {path}:7: sample_id: 'no-such-sample' is not a sample in the store"]
    assert store_rows(ws, "SELECT count(*) FROM reviews") == [(0,)]


def test_import_then_reimport_then_round_trip(seeded, example_template: Path, tmp_path: Path, cli) -> None:
    ws, samples = seeded
    records = _good(samples)
    path = _write(tmp_path / "decisions.jsonl", records)
    first = json.loads(cli("review", "import", str(path), "-w", str(ws), "--json").stdout)
    assert (first["records"], first["inserted"], first["already_present"]) == (6, 6, 0)
    again = import_reviews(Workspace.open(ws), path)
    assert (again.inserted, again.already_present, again.journal) == (0, 6, None)
    assert store_rows(ws, "SELECT count(*), count(DISTINCT review_id) FROM reviews") == [(6, 6)]
    # Later lines supersede earlier ones; the views read them as curation will.
    assert store_rows(ws, "SELECT label FROM gold_pairs WHERE pair_id = ?", [samples[2].pair_id]) == [("L2",)]
    edited = store_rows(ws, "SELECT edited_text FROM sample_decisions WHERE action = 'edit'")[0][0]
    assert edited.startswith("Label: L3\n1. Query understanding: a")

    # An undo of an imported decision, named by the id export shows.
    exported = [json.loads(line) for line in cli("review", "export", "-w", str(ws)).stdout.splitlines()]
    accept = next(r for r in exported if r["action"] == "accept")
    _write(tmp_path / "undo.jsonl", [{"annotator": "tool", "action": "undo", "pair_id": accept["pair_id"],
                                      "sample_id": accept["sample_id"], "reason": accept["review_id"]}])
    import_reviews(Workspace.open(ws), tmp_path / "undo.jsonl")
    assert accept["sample_id"] not in {r[0] for r in store_rows(ws, "SELECT sample_id FROM sample_decisions")}

    out = tmp_path / "all.jsonl"
    summary = json.loads(cli("review", "export", "-w", str(ws), "-o", str(out), "--json").stdout)
    assert summary["reviews"] == 7
    with Store(Workspace.open(ws).store_path, read_only=True) as store:
        live = export_reviews(store, live_only=True)
    assert len(live) == 5 and all(r["action"] != "undo" for r in live)

    # The same pairs and samples in a second workspace: the export imports as it is, ids and times kept.
    other = Path(shutil.copytree(example_template, tmp_path / "other"))
    seed_samples(other, per_pair=2)
    import_reviews(Workspace.open(other), out)
    cols = "review_id, annotator, action, pair_id, sample_id, step_index, step_correct, reason, new_label, edited_text, note, created_at"
    assert store_rows(other, f"SELECT {cols} FROM reviews ORDER BY review_id") == \
        store_rows(ws, f"SELECT {cols} FROM reviews ORDER BY review_id")


def test_journal_flush_is_idempotent_and_survives_a_torn_line(seeded) -> None:
    ws, samples = seeded
    w = Workspace.open(ws)
    journal = journal_dir(w) / "dora.jsonl"
    first = new_review("dora", "accept", samples[0].pair_id, sample_id=samples[0].sample_id)
    append_journal(journal, [first])
    with open(journal, "ab") as fh:  # a crash mid-append leaves half a line, never acknowledged
        fh.write(b'{"review_id": "half')
    second = new_review("dora", "reject", samples[1].pair_id, sample_id=samples[1].sample_id, reason="wrong_label")
    append_journal(journal, [second])
    report = flush_workspace(w)
    assert (report.inserted, report.busy, len(report.bad_lines)) == (2, False, 1)
    assert "dora.jsonl" in report.bad_lines[0]
    assert flush_workspace(w) == FlushReport()  # nothing new: offsets moved with the copy
    # Offsets lost (e.g. a store restored from backup): the copy is still exactly once, by review_id.
    with Store(w.store_path) as store:
        store.con.execute("DELETE FROM review_journal_offsets")
    again = flush_workspace(w)
    assert (again.inserted, again.already_present) == (0, 2)
    assert sorted(store_rows(ws, "SELECT review_id FROM reviews")) == sorted([(first.review_id,), (second.review_id,)])
