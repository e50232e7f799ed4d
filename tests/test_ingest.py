"""Ingest real relevance data into a real DuckDB store; bad input is a clear error or a counted reject."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.errors import CotgenError

from conftest import COTGEN, run_cli, store_rows

CROWDFLOWER_MAP = "id=id,query=query,title=product_title,description=product_description,label=median_relevance"
BINARY_SCHEME = """
[schemes.binary]
grades = [{ id = "R", name = "Relevant", meaning = "serves the query" },
          { id = "N", name = "Not relevant", meaning = "does not serve the query" }]
relevant = ["R"]
mapping = { "Relevant" = "R", "Not relevant" = "N" }
"""


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    run_cli("init", str(tmp_path / "ws"))
    return tmp_path / "ws"


def ingest_json(ws: Path, *args: str) -> list[dict]:
    return json.loads(run_cli("ingest", "-w", str(ws), "--json", *args).stdout)


def test_crowdflower_counts(ws, shared_data):
    [report] = ingest_json(ws, str(shared_data / "crowdflower/train_dev.csv"), "--scheme", "crowdflower",
                           "--map", CROWDFLOWER_MAP, "--strip-html")
    assert report["rows_read"] == 7356 and report["added"] == 7356 and report["rejected"] == 0
    assert report["labels"] == {"L4": 4358, "L3": 1281, "L2": 1122, "L1": 595}
    by_raw = dict(store_rows(ws, "SELECT raw_label, count(*) FROM pairs GROUP BY 1"))
    assert by_raw == {"1": 595, "2": 1122, "3": 1281, "4": 4358}
    assert store_rows(ws, "SELECT count(*) FROM pairs WHERE description LIKE '%<br%' OR description LIKE '%&amp;%'") == [(0,)]
    status = json.loads(run_cli("status", "-w", str(ws), "--json").stdout)
    assert status["total_pairs"] == 7356


def test_crowdflower_without_ids_collapses_repeats_and_records_disagreements(ws, shared_data):
    [report] = ingest_json(ws, str(shared_data / "crowdflower/train_dev.csv"), "--scheme", "crowdflower",
                           "--map", CROWDFLOWER_MAP.replace("id=id,", ""))
    assert report["added"] + report["duplicates"] == 7356
    assert report["duplicates"] > 0 and report["conflicts"] > 0
    (n_conflicted,) = store_rows(ws, "SELECT count(DISTINCT pair_id) FROM label_disagreements")[0]
    assert n_conflicted == report["conflicts"]


def test_esci_sample(ws, shared_data):
    [report] = ingest_json(ws, str(shared_data / "esci_sample/query_esci_lookup.csv"), "--scheme", "esci",
                           "--map", "id=product_id,query=query,title=product_text,label=esci_label")
    assert report["added"] == 99
    assert report["labels"] == {"E": 76, "S": 5, "C": 1, "I": 17}


def test_wands_binary_with_a_user_scheme(ws, shared_data):
    config = ws / "cotgen.toml"
    config.write_text(config.read_text() + BINARY_SCHEME + f"""
[[sources]]
name = "wands_train"
path = "{shared_data / 'wands_binary/wands_200_train_partial.csv'}"
scheme = "binary"
[sources.columns]
query = "query"
title = "name"
label = "label"

[[sources]]
name = "wands_test"
path = "{shared_data / 'wands_binary/wands_2800_test_partial.csv'}"
scheme = "binary"
[sources.columns]
query = "query"
title = "name"
label = "target"
""")
    reports = ingest_json(ws)
    assert [r["added"] for r in reports] == [200, 2800]
    assert all(r["labels"]["R"] + r["labels"]["N"] == r["added"] for r in reports)
    assert store_rows(ws, "SELECT DISTINCT scheme FROM pairs") == [("binary",)]


def test_reingest_adds_nothing(ws, shared_data):
    path = str(shared_data / "esci_sample/query_esci_lookup.csv")
    args = (path, "--scheme", "esci", "--map", "id=product_id,query=query,title=product_text,label=esci_label")
    first, = ingest_json(ws, *args)
    again, = ingest_json(ws, *args)
    assert (first["added"], again["added"], again["already_present"]) == (99, 0, 99)
    assert store_rows(ws, "SELECT count(*) FROM pairs") == [(99,)]
    assert store_rows(ws, "SELECT count(*) FROM ingests") == [(2,)]


def test_pair_ids_are_stable_across_stores(tmp_path, shared_data):
    ids = []
    for name in ("a", "b"):
        run_cli("init", str(tmp_path / name))
        ingest_json(tmp_path / name, str(shared_data / "esci_sample/query_esci_lookup.csv"), "--scheme", "esci",
                    "--source", "esci", "--map", "id=product_id,query=query,title=product_text,label=esci_label")
        ids.append(store_rows(tmp_path / name, "SELECT pair_id FROM pairs ORDER BY pair_id"))
    assert ids[0] == ids[1]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = [
    ("missing_column.csv", b"query,title\nred shoe,Red Shoe\n", "missing column 'label'"),
    ("unknown_label.csv", b"query,title,label\nred shoe,Red Shoe,L4\nhat,Hat,L9\n",
     "unknown_label.csv:3: label: unknown label 'L9' for scheme taosr4"),
    ("empty.csv", b"", "the file is empty"),
    ("header_only.csv", b"query,title,label\n", "header but no rows"),
    ("latin1.csv", "query,title,label\ncaf\u00e9 cup,Caf\u00e9 Mug,L4\n".encode("latin-1"), "not valid UTF-8"),
    ("truncated.csv", b"query,title,label\nred shoe,Red Shoe,L4\nblue hat,Blue", "truncated.csv:3: label: missing value"),
    ("unclosed.csv", b'query,title,label\nred shoe,Red Shoe,L4\nblue hat,"Blue Hat', "malformed CSV"),
    ("missing_title.csv", b"query,title,label\nred shoe,,L4\n", "missing_title.csv:2: title: missing value"),
    ("truncated.jsonl", b'{"query": "mug", "title": "Mug", "label": "L4"}\n\n{"query": "hat", "title": \n',
     "truncated.jsonl:3: not valid JSON (Expecting value at column 26)"),
    ("list.jsonl", b'{"query": "mug", "title": "Mug", "label": "L4"}\n["hat"]\n', "list.jsonl:2: expected a JSON object"),
]


@pytest.mark.parametrize(("name", "data", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_store_unchanged(ws, name, data, message):
    run_cli("ingest", "-w", str(ws), str(write(ws / "good.csv", b"query,title,label\nmug,Blue Mug,L4\n")))
    proc = run_cli("ingest", "-w", str(ws), str(write(ws / name, data)), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert store_rows(ws, "SELECT count(*) FROM pairs") == [(1,)]
    assert store_rows(ws, "SELECT count(*) FROM ingests") == [(1,)]


def test_a_path_that_is_no_file_is_named(ws):
    for path, message in ((ws, "a directory, not a file"), (ws / "nope.csv", "no such file")):
        proc = run_cli("ingest", "-w", str(ws), str(path), check=False)
        assert proc.returncode == 2 and proc.stderr.strip() == f"error: {path}: {message}"
    proc = run_cli("ingest", "-w", str(ws), str(write(ws / "bad.parquet", b"not parquet at all")), check=False)
    assert proc.returncode == 2 and "bad.parquet: malformed PARQUET: " in proc.stderr and "quote" not in proc.stderr


def test_wrong_encoding_fixed_by_flag(ws):
    path = write(ws / "latin1.csv", "query,title,label\ncaf\u00e9 cup,Caf\u00e9 Mug,L4\n".encode("latin-1"))
    [report] = ingest_json(ws, str(path), "--encoding", "latin-1")
    assert report["added"] == 1
    assert store_rows(ws, "SELECT title FROM pairs") == [("Caf\u00e9 Mug",)]


def test_duplicates_collapse_and_skip_bad_counts_rejects(ws):
    rows = b"query,title,label\nmug,Blue Mug,L4\nmug,Blue Mug,L4\nMUG , blue  mug,L4\nmug,Blue Mug,L2\nhat,Hat,L9\n,Cap,L3\n"
    [report] = ingest_json(ws, str(write(ws / "dups.csv", rows)), "--skip-bad")
    assert (report["rows_read"], report["added"], report["duplicates"], report["conflicts"], report["rejected"]) == (6, 1, 3, 1, 2)
    rejects = Path(report["rejects_path"]).read_text().splitlines()
    assert rejects[0] == "row,field,reason,query,title,raw_label"
    assert [r.split(",")[:2] for r in rejects[1:]] == [["6", "label"], ["7", "query"]]
    assert store_rows(ws, "SELECT label FROM label_disagreements ORDER BY label") == [("L2",), ("L4",)]
    assert store_rows(ws, "SELECT label FROM pairs") == [("L4",)]


def test_parquet_and_jsonl_sources(ws):
    import polars as pl

    frame = pl.DataFrame({"q": ["mug", "hat"], "t": ["Blue Mug", "Red Hat"], "grade": [4, 1], "color": ["blue", "red"]})
    frame.write_parquet(ws / "pairs.parquet")
    frame.write_ndjson(ws / "pairs.jsonl")
    mapping = "query=q,title=t,label=grade,attributes=color"
    [pq] = ingest_json(ws, str(ws / "pairs.parquet"), "--scheme", "crowdflower", "--map", mapping, "--source", "pq")
    [js] = ingest_json(ws, str(ws / "pairs.jsonl"), "--scheme", "crowdflower", "--map", mapping, "--source", "js")
    assert pq["labels"] == js["labels"] == {"L4": 1, "L3": 0, "L2": 0, "L1": 1}
    attrs = store_rows(ws, "SELECT DISTINCT attributes->>'color' FROM pairs ORDER BY 1")
    assert attrs == [("blue",), ("red",)]


def test_two_concurrent_writers(ws, shared_data):
    esci = str(shared_data / "esci_sample/query_esci_lookup.csv")
    cf = str(shared_data / "crowdflower/train_dev.csv")
    procs = [
        subprocess.Popen([*COTGEN, "ingest", "-w", str(ws), esci, "--scheme", "esci", "--json",
                          "--map", "id=product_id,query=query,title=product_text,label=esci_label"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([*COTGEN, "ingest", "-w", str(ws), cf, "--scheme", "crowdflower", "--json", "--map", CROWDFLOWER_MAP],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert store_rows(ws, "SELECT count(*) FROM pairs") == [(99 + 7356,)]


def test_locked_store_is_a_clear_message(ws):
    config = ws / "cotgen.toml"
    config.write_text(config.read_text().replace("lock_timeout_s = 30", "lock_timeout_s = 1"))
    run_cli("ingest", "-w", str(ws), str(write(ws / "good.csv", b"query,title,label\nmug,Blue Mug,L4\n")))
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,sys,time; c=duckdb.connect({str(ws / 'store.duckdb')!r}); print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_cli("status", "-w", str(ws), check=False)
        assert proc.returncode == 2
        assert "in use by another cotgen process" in proc.stderr and f"process {holder.pid}" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        holder.kill()


def test_run_right_after_init_and_cli_ingest(ws, shared_data):
    """The documented start: `init`, `ingest PATH`, then `cotgen run`; the file is now a configured source."""
    before = (ws / "cotgen.toml").read_text(encoding="utf-8")
    path = shared_data / "esci_sample/query_esci_lookup.csv"
    [first] = ingest_json(ws, str(path), "--scheme", "esci", "--map", "id=product_id,title=product_text")
    assert first["added"] == 99 and first["recorded_in"] == str(ws / "cotgen.toml")
    assert first["detected"] == {"query": "query", "label": "esci_label"}
    after = (ws / "cotgen.toml").read_text(encoding="utf-8")
    assert after.startswith(before), "the user's file (comments included) is kept; the source is appended"
    from schemas.config import load_config

    [source] = load_config(ws / "cotgen.toml").sources
    assert (source.name, source.path, source.scheme) == ("query_esci_lookup", str(path.resolve()), "esci")
    assert source.columns.model_dump(exclude_none=True) == {
        "id": "product_id", "query": "query", "title": "product_text", "label": "esci_label", "attributes": []}
    stage = json.loads(run_cli("run", "-w", str(ws), "--stage", "ingest", "--json").stdout)
    assert stage["ingest"]["sources"] == 1 and stage["ingest"]["added"] == 0
    [again] = ingest_json(ws, str(path), "--scheme", "esci", "--map",
                          "id=product_id,query=query,title=product_text,label=esci_label")
    assert again["recorded_in"] is None and (ws / "cotgen.toml").read_text(encoding="utf-8") == after
    assert store_rows(ws, "SELECT count(*) FROM pairs") == [(99,)]


def test_same_file_under_another_source_name_adds_nothing(ws):
    path = write(ws / "pairs.csv", b"query,title,label\nmug,Blue Mug,L4\nhat,Red Hat,L1\n")
    ingest_json(ws, str(path), "--source", "first")
    copy = write(ws / "copy.csv", path.read_bytes())
    proc = run_cli("ingest", "-w", str(ws), str(copy), "--source", "second")
    assert "already in the store as source 'first'" in proc.stderr and "--as-new-source" in proc.stderr
    assert store_rows(ws, "SELECT count(*) FROM pairs") == [(2,)]
    assert "second" not in (ws / "cotgen.toml").read_text(encoding="utf-8")
    [forced] = ingest_json(ws, str(copy), "--source", "second", "--as-new-source")
    assert forced["added"] == 2 and forced["same_file_as"] is None
    assert store_rows(ws, "SELECT source, count(*) FROM pairs GROUP BY 1 ORDER BY 1") == [("first", 2), ("second", 2)]


# ---- column detection, more inputs, honest values, guiding errors (issue 17) ------------------------------


def lib_ingest(tmp_path: Path, path: Path | str, scheme: str = "taosr4", **source: object):
    """Ingest through the library into a real store: (report, rows of pairs)."""
    from curation.ingest import ingest
    from curation.store import Store
    from schemas.config import SourceConfig
    from schemas.labels import BUILTIN_SCHEMES

    with Store(tmp_path / "store.duckdb") as store:
        config = SourceConfig.model_validate({"name": "src", "path": str(path), "scheme": scheme, **source})
        report = ingest(store, config, BUILTIN_SCHEMES[scheme], rejects_dir=tmp_path)
        rows = store.query("SELECT query, title, description, raw_label, label, source_row FROM pairs ORDER BY source_row")
    return report, rows


def test_kaggle_crowdflower_headers_need_no_map(ws, shared_data):
    proc = run_cli("ingest", "-w", str(ws), str(shared_data / "crowdflower/train_dev.csv"), "--scheme", "crowdflower",
                   "--strip-html", "--json")
    [report] = json.loads(proc.stdout)
    assert report["added"] == 7356 and report["labels"] == {"L4": 4358, "L3": 1281, "L2": 1122, "L1": 595}
    assert report["columns"] == {"query": "query", "title": "product_title", "description": "product_description",
                                 "label": "median_relevance", "id": "id"}
    assert set(report["detected"]) == {"query", "title", "description", "label", "id"}
    (recorded,) = store_rows(ws, "SELECT columns->>'label' FROM ingests")[0]
    assert recorded == "median_relevance"
    shown = run_cli("ingest", "-w", str(ws), str(shared_data / "crowdflower/train_dev.csv"), "--scheme", "crowdflower",
                    "--source", "again", "--as-new-source")
    assert "columns: query <- query, title <- product_title" in shown.stderr and "label <- median_relevance" in shown.stderr


def test_home_depot_latin1_headers_and_bins(tmp_path):
    rows = [("1", "100001", "Simpson Strong-Tie 12-Gauge Angle", "angle bracket", "3"),
            ("2", "100001", "Caf\u00e9 Table Lamp", "l bracket", "2.5"),
            ("3", "100002", "BEHR Premium Textured Deck", "deck over", "1.67"),
            ("4", "100003", "Br\u00fcckner Shower Rod", "rain shower head", "1.5"),
            ("5", "100004", "Ni\u00f1o Lawn Mower", "mower", "1")]
    text = "id,product_uid,product_title,search_term,relevance\n" + "".join(",".join(r) + "\n" for r in rows)
    path = write(tmp_path / "hd.csv", text.encode("latin-1"))
    report, stored = lib_ingest(tmp_path, path, "homedepot", encoding="latin-1")
    assert report.columns == {"query": "search_term", "title": "product_title", "label": "relevance", "id": "id"}
    assert [r["label"] for r in stored] == ["H3", "H3", "H2", "H2", "H1"]
    assert stored[1]["title"] == "Caf\u00e9 Table Lamp"


def test_esci_headers_need_no_map(tmp_path):
    path = write(tmp_path / "esci.csv", b"query,product_title,esci_label\niphone charger,USB-C Cable,E\n"
                                        b"iphone charger,Phone Case,C\n")
    report, stored = lib_ingest(tmp_path, path, "esci")
    assert report.detected == {"query": "query", "title": "product_title", "label": "esci_label"}
    assert [r["label"] for r in stored] == ["E", "C"]


def test_ambiguous_or_missing_headers_name_the_candidates(tmp_path):
    path = write(tmp_path / "amb.csv", b"query,title,product_title,label\nmug,Mug,Blue Mug,L4\n")
    with pytest.raises(CotgenError, match=r"amb.csv: columns 'title' and 'product_title' could each be the title; "
                                          r"pick one with --map title=COLUMN"):
        lib_ingest(tmp_path, path)
    report, stored = lib_ingest(tmp_path, path, columns={"title": "product_title"})
    assert report.detected == {"query": "query", "label": "label"} and stored[0]["title"] == "Blue Mug"
    none = write(tmp_path / "none.csv", b"query,text,grade_of\nmug,Mug,L4\n")
    with pytest.raises(CotgenError, match=r"none.csv: missing columns 'title' and 'label' \(the file has: query, "):
        lib_ingest(tmp_path, none)


def test_pandas_parquet_with_float_labels(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"query": ["mug", "hat", "cap"], "product_title": ["Blue Mug", "Red Hat", "Cap"],
                          "median_relevance": [4.0, 1.0, 3.0]})
    frame.to_parquet(tmp_path / "pandas.parquet")
    report, stored = lib_ingest(tmp_path, tmp_path / "pandas.parquet", "crowdflower")
    assert report.labels == {"L4": 1, "L3": 1, "L2": 0, "L1": 1} and stored[0]["raw_label"] == "4.0"
    frame.assign(median_relevance=[4.0, 4.5, 3.0]).to_parquet(tmp_path / "half.parquet")
    with pytest.raises(CotgenError, match=r"half.parquet:2: label: unknown label '4.5' for scheme crowdflower"):
        lib_ingest(tmp_path, tmp_path / "half.parquet", "crowdflower")


def split_rows(n: int, start: int) -> dict[str, list[str]]:
    return {"query": [f"q{i}" for i in range(start, start + n)], "title": [f"t{i}" for i in range(start, start + n)],
            "label": ["L4", "L1"] * (n // 2)}


def test_saved_hf_dataset(ws, tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict(split_rows(4, 0)), "test": Dataset.from_dict(split_rows(2, 4))}).save_to_disk(
        str(tmp_path / "saved"))
    [only_test] = ingest_json(ws, str(tmp_path / "saved"), "--split", "test", "--source", "hf_test")
    assert only_test["added"] == 2
    [every] = ingest_json(ws, str(tmp_path / "saved"), "--source", "hf_all")
    assert every["rows_read"] == 6 and every["added"] == 6
    bad = run_cli("ingest", "-w", str(ws), str(tmp_path / "saved"), "--split", "dev", "--source", "x", check=False)
    assert bad.returncode == 2 and "no split 'dev' (splits: train, test)" in bad.stderr
    Dataset.from_dict(split_rows(2, 8)).save_to_disk(str(tmp_path / "one"))
    [single] = ingest_json(ws, str(tmp_path / "one"), "--source", "one")
    assert single["added"] == 2


def test_parquet_shards_by_directory_or_glob(ws, tmp_path):
    import polars as pl

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        pl.DataFrame(split_rows(2, 10 + 2 * i)).write_parquet(shards / f"part-{i}.parquet")
    [by_dir] = ingest_json(ws, str(shards), "--source", "shards")
    assert by_dir["rows_read"] == 6 and by_dir["added"] == 6
    [by_glob] = ingest_json(ws, str(shards / "part-*.parquet"))
    assert by_glob["source"] == "shards" and by_glob["already_present"] == 6
    pl.DataFrame({"query": ["q"], "title": [""], "label": ["L4"]}).write_parquet(shards / "part-9.parquet")
    broken = run_cli("ingest", "-w", str(ws), str(shards), "--source", "broken", check=False)
    assert broken.returncode == 2 and f"{shards / 'part-9.parquet'}:1: title: missing value" in broken.stderr


def test_odd_values_are_errors_or_counted(tmp_path):
    import polars as pl

    obj = write(tmp_path / "obj.jsonl", b'{"query": "mug", "title": "Mug", "label": "L4"}\n'
                                        b'{"query": {"text": "hat"}, "title": "Hat", "label": "L4"}\n')
    with pytest.raises(CotgenError, match=r"obj.jsonl:2: query: object value, expected text"):
        lib_ingest(tmp_path, obj)
    pl.DataFrame({"query": ["mug"], "title": [["Blue", "Mug"]], "label": ["L4"]}).write_parquet(tmp_path / "list.parquet")
    with pytest.raises(CotgenError, match=r"list.parquet:1: title: a list value, expected text"):
        lib_ingest(tmp_path, tmp_path / "list.parquet")
    dup = write(tmp_path / "dup.csv", b"query,title,label,label\nmug,Mug,L4,L1\n")
    with pytest.raises(CotgenError, match=r"dup.csv: the header repeats 'label'"):
        lib_ingest(tmp_path, dup)
    nul = write(tmp_path / "nul.csv", b"query,title,label\nm\x00ug,Blue\x00 Mug\x00,L4\n")
    report, stored = lib_ingest(tmp_path, nul)
    assert report.nul_bytes_removed == 3 and (stored[0]["query"], stored[0]["title"]) == ("mug", "Blue Mug")
    run_cli("init", str(tmp_path / "ws"))
    shown = run_cli("ingest", "-w", str(tmp_path / "ws"), str(nul)).stdout
    assert any([c.strip() for c in line.split("│")[1:3]] == ["NUL bytes removed", "3"] for line in shown.splitlines())


def test_errors_that_guide(tmp_path):
    crowdflower = write(tmp_path / "cf.csv", b"query,title,label\na,A,4\nb,B,1\nc,C,2\nd,D,3\n")
    with pytest.raises(CotgenError) as e:
        lib_ingest(tmp_path, crowdflower)
    assert "unknown label '4' for scheme taosr4" in str(e.value)
    assert "the values 1-4 fit scheme crowdflower: --scheme crowdflower" in str(e.value)
    assert "--skip-bad" not in str(e.value) and "(all 4 rows are bad)" in str(e.value)
    some = write(tmp_path / "some.csv", b"query,title,label\na,A,L4\nb,B,L9\nc,C,L8\n")
    with pytest.raises(CotgenError, match=r"some.csv:3: label: .*\(1 more bad rows; --skip-bad sends them"):
        lib_ingest(tmp_path, some)


def test_strip_html_collapses_whitespace_runs(tmp_path):
    ebay = write(tmp_path / "ebay.csv", b'query,title,description,label\nmug,<b>Blue</b>  Mug,"<div>\n\t\t\t\t\t '
                                        b'Item specifics \n\t\t<br>Colour:&nbsp;blue</div>",L4\n')
    _, stored = lib_ingest(tmp_path, ebay, strip_html=True, columns={"description": "description"})
    assert stored[0]["title"] == "Blue Mug" and stored[0]["description"] == "Item specifics Colour:\xa0blue"
