"""Retrieval on the shipped rule base: documents, embedder cache, persisted FAISS index, search, CLI.

Everything runs the real all-MiniLM-L6-v2 embedder and real FAISS indexes. One index over the shipped
rules is built per session into a temporary directory with its own embedding cache; later builds reuse
that cache, which is what makes "edit one rule, re-embed one document" observable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.ann import choose_kind, resolve_params
from retrieval.documents import BUILTIN_DIRS, load_documents, parse_document
from retrieval.embedder import Embedder
from retrieval.index import DOCS_FILE, INDEX_FILE, MANIFEST_FILE, RuleIndex
from retrieval.search import DEFAULT_TEMPLATE, check_template, compose_query, search_pairs, search_text
from schemas.config import IndexConfig
from schemas.errors import CotgenError
from schemas.pair import Pair

PROBES = Path(__file__).parent / "retrieval_probes.jsonl"
EMBEDDER = "bundled:all-minilm-l6-v2"
TOPICS = ["category", "near-category", "brand", "model-number", "series", "size", "colour", "material", "capacity",
          "quantity", "gender", "age", "pet", "compatibility", "accessory", "parts", "kit", "complement", "negation",
          "alternative", "price", "quality", "gift", "problem", "spelling", "plural", "synonym", "bundle",
          "multipack", "refurbished", "thin-text"]


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory) -> Path:
    """A private COTGEN_CACHE: its embeddings/ folder is the embedding cache every build here shares."""
    return tmp_path_factory.mktemp("cotgen-cache")


@pytest.fixture(scope="session")
def builtin_index(tmp_path_factory, cache_home) -> RuleIndex:
    docs = load_documents(["builtin"])
    return RuleIndex.build(docs, tmp_path_factory.mktemp("idx") / "rules", EMBEDDER,
                           cache_root=cache_home / "embeddings")


def probe_pairs() -> tuple[list[dict], list[Pair]]:
    probes = [json.loads(line) for line in PROBES.read_text(encoding="utf-8").splitlines() if line.strip()]
    pairs = [Pair(pair_id=f"probe-{i}", source="probes", query=p["query"], title=p["item"], label="",
                  scheme=p["scheme"]) for i, p in enumerate(probes)]
    return probes, pairs


def hit_ids(hits) -> list[str]:
    return [doc.id for doc, _ in hits]


# ---- the shipped rule base -------------------------------------------------------------------------------


def test_shipped_rule_base_is_complete():
    docs = load_documents(["builtin"])
    rules = [d for d in docs if d.kind == "rule"]
    knowledge = [d for d in docs if d.kind == "knowledge"]
    assert len(rules) >= 60 and len(knowledge) >= 5
    for r in rules:
        assert r.title and r.text and r.grades and r.tags and r.cues, r.id
        assert r.positive_example and r.negative_example, r.id
    tags = {t for r in rules for t in r.tags}
    assert not [t for t in TOPICS if t not in tags]
    by_id = {d.id: d for d in docs}
    assert by_id["accessory-homedepot-irrelevant"].schemes == ["homedepot"]
    assert by_id["accessory-homedepot-irrelevant"].grades == ["H1"]
    assert by_id["accessory-esci-complement"].schemes == ["esci"]
    assert by_id["accessory-esci-complement"].grades == ["C"]
    assert "homedepot" not in by_id["accessory-for-queried-product"].schemes


def test_installed_package_finds_shipped_documents(tmp_path):
    """From another directory the (editable) installed package still resolves "builtin" to its own files."""
    code = ("from retrieval.documents import BUILTIN_DIRS, load_documents; "
            "print(len(load_documents(['builtin'])), *BUILTIN_DIRS.values())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    count, *dirs = out.stdout.split()
    assert int(count) == len(load_documents(["builtin"]))
    assert [Path(d) for d in dirs] == list(BUILTIN_DIRS.values())


GOOD = "---\nid: r1\ntitle: A rule\ngrades: [L2]\n---\nThe rule text.\n"


@pytest.mark.parametrize(("text", "message"), [
    ("id: r1\ntitle: no fence\n", "front matter: the file must start with a '---' block"),
    ("---\nid: [unclosed\n---\nbody\n", "front matter: not valid YAML"),
    ("---\nid: r1\ntitle: t\ncolour: red\n---\nbody\n", "colour: unknown field"),
    ("---\nid: r1\n---\nbody\n", "title: Field required"),
    ("---\nid: r1\ntitle: t\n---\n\n", "text: must not be empty"),
    ("---\nid: r1\ntitle: t\ngrades: [L9]\n---\nbody\n", "grades: unknown grade 'L9'"),
    ("---\nid: r1\ntitle: t\nschemes: [nope]\n---\nbody\n", "schemes: unknown label scheme 'nope'"),
    ("---\nid: r1\ntitle: t\ncues: [without, no]\n---\nbody\n", "cues.1: Input should be a valid string"),
    ("---\nid: bad id!\ntitle: t\n---\nbody\n", "id: 'bad id!' must be letters"),
    ("---\nid: r1\ntitle: t\nkind: recipe\n---\nbody\n", "kind: Input should be 'rule' or 'knowledge'"),
])
def test_bad_document_names_file_and_field(tmp_path, text, message):
    (tmp_path / "bad.md").write_text(text, encoding="utf-8")
    with pytest.raises(CotgenError, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        load_documents([str(tmp_path)])
    assert str(e.value).startswith(f"{tmp_path / 'bad.md'}: ")


def test_duplicate_ids_name_both_files(tmp_path):
    (tmp_path / "a.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.md").write_text(GOOD, encoding="utf-8")
    with pytest.raises(CotgenError, match=r"b\.md: id: 'r1' is already used by .*a\.md"):
        load_documents([str(tmp_path)])


def test_scheme_grades_and_relative_sources(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "hd.md").write_text(
        "---\nid: hd\ntitle: t\nschemes: homedepot\ngrades: [H1, L2]\n---\nbody\n", encoding="utf-8")
    (doc,) = load_documents(["rules"], base=tmp_path)
    assert doc.schemes == ["homedepot"] and doc.grades == ["H1", "L2"] and doc.kind == "rule"
    assert doc.applies_to("homedepot") and not doc.applies_to("esci")
    with pytest.raises(CotgenError, match="index.rules: 'missing' is not a directory"):
        load_documents(["missing"], base=tmp_path)
    assert parse_document(tmp_path / "rules" / "hd.md").content_hash() == doc.content_hash()


# ---- embedder --------------------------------------------------------------------------------------------


def test_embedder_batches_normalises_and_caches(tmp_path):
    texts = ["cordless drill", "drill bits for wood", "queen duvet cover", "dog food grain free", "case for iphone"]
    small = Embedder(EMBEDDER, device="auto", batch_size=2, cache_root=tmp_path)
    assert small.device == "cpu" or small.device.startswith(("cuda", "mps"))
    vectors = small.encode(texts)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(Embedder(EMBEDDER, batch_size=64).encode(texts), vectors, atol=1e-5)
    first, missed = small.encode_cached(texts)
    assert missed == [0, 1, 2, 3, 4]
    again, missed = small.encode_cached([*texts, "bagless vacuum"])
    assert missed == [5]
    np.testing.assert_array_equal(again[:5], first)


# ---- index and search ------------------------------------------------------------------------------------


def test_probe_recall_at_5(builtin_index):
    probes, pairs = probe_pairs()
    results = search_pairs(builtin_index, pairs, k=5)
    recalled = [any(e in hit_ids(h) for e in p["expected"]) for p, h in zip(probes, results, strict=True)]
    found = [len(set(p["expected"]) & set(hit_ids(h))) / len(p["expected"])
             for p, h in zip(probes, results, strict=True)]
    recall = sum(recalled) / len(recalled)
    print(f"\nrule recall@5 over {len(probes)} probes: {recall:.3f} (a probe counts when one of its expected "
          f"rules is in the top 5); share of all expected ids found: {np.mean(found):.3f}")
    assert len(probes) >= 30
    assert recall >= 0.8


def test_search_filters_by_scheme_kind_and_tag(builtin_index):
    saw = Pair(pair_id="p", source="s", query="circular saw", title="7-1/4 inch Circular Saw Blade, 24 Tooth",
               label="H1", scheme="homedepot")
    (hd,) = search_pairs(builtin_index, [saw], k=10)
    assert all(d.applies_to("homedepot") for d, _ in hd)
    assert "accessory-homedepot-irrelevant" in hit_ids(hd)
    (generic,) = search_pairs(builtin_index, [saw.model_copy(update={"scheme": "taosr4"})], k=10)
    assert "accessory-homedepot-irrelevant" not in hit_ids(generic)
    assert "accessory-for-queried-product" in hit_ids(generic)
    knowledge = search_text(builtin_index, "sofa couch settee", k=3, kinds=("knowledge",))
    assert [d.kind for d, _ in knowledge] == ["knowledge"] * 3
    assert knowledge[0][0].id == "k-furniture-synonyms"
    tagged = search_text(builtin_index, "shampoo without sulfates", k=4, tags=["negation"])
    assert len(tagged) == 4 and all("negation" in d.tags for d, _ in tagged)
    scores = [s for _, s in search_text(builtin_index, "used iphone", k=8)]
    assert scores == sorted(scores, reverse=True) and len(scores) == 8
    assert search_text(builtin_index, "anything", tags=["no-such-tag"]) == []


def test_query_template():
    pair = Pair(pair_id="p", source="s", query="rain jacket", title="Packable Jacket", label="L3", scheme="taosr4",
                attributes={"colour": "navy", "size": " "}, description="light")
    assert IndexConfig().query_template == DEFAULT_TEMPLATE
    assert compose_query(pair) == "query: rain jacket | item: Packable Jacket colour: navy"
    assert compose_query(pair, "{query} / {title} / {description} ({scheme})") == \
        "rain jacket / Packable Jacket / light (taosr4)"
    with pytest.raises(CotgenError, match=r"index.query_template: unknown field '\{brand\}'"):
        check_template("{query} {brand}")


def test_persistence_round_trip_gives_identical_results(builtin_index):
    _, pairs = probe_pairs()
    loaded = RuleIndex.load(builtin_index.index_dir, embedder=EMBEDDER)
    assert loaded.docs == builtin_index.docs
    assert loaded.manifest == builtin_index.manifest
    before = search_pairs(builtin_index, pairs, k=5)
    after = search_pairs(loaded, pairs, k=5)
    assert [[(d.id, s) for d, s in h] for h in before] == [[(d.id, s) for d, s in h] for h in after]
    assert loaded.get("brand-only-query").title == builtin_index.get("brand-only-query").title
    with pytest.raises(CotgenError, match="no rule or knowledge entry with id 'nope'"):
        loaded.get("nope")


def test_edit_one_rule_reembeds_one_document(builtin_index, cache_home, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(BUILTIN_DIRS["rule"], rules)
    index_dir = tmp_path / "index"
    build = lambda: RuleIndex.build(load_documents([str(rules)]), index_dir, EMBEDDER,  # noqa: E731
                                    cache_root=cache_home / "embeddings")
    first = build()
    assert first.report.written and first.report.embedded == 0  # every text is in the shared cache already
    unchanged = build()
    assert not unchanged.report.written and unchanged.report.embedded == 0
    path = rules / "price-limit.md"
    path.write_text(path.read_text(encoding="utf-8").replace("is a constraint", "is a hard constraint"), "utf-8")
    edited = build()
    assert (edited.report.embedded, edited.report.texts_embedded, edited.report.written) == (1, 1, True)
    assert "hard constraint" in RuleIndex.load(index_dir).get("price-limit").text
    assert edited.manifest.documents["price-limit"] != first.manifest.documents["price-limit"]
    assert {k: v for k, v in edited.manifest.documents.items() if k != "price-limit"} == \
        {k: v for k, v in first.manifest.documents.items() if k != "price-limit"}


def test_embedder_mismatch_is_a_clear_error(builtin_index):
    with pytest.raises(CotgenError, match=r"built with embedder 'bundled:all-minilm-l6-v2' \(dim 384\), "
                                          r"but 'sentence-transformers/all-mpnet-base-v2' is configured"):
        RuleIndex.load(builtin_index.index_dir, embedder="sentence-transformers/all-mpnet-base-v2")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / INDEX_FILE).write_bytes((d / INDEX_FILE).read_bytes()[:100]), "index.faiss: corrupt"),
    (lambda d: (d / DOCS_FILE).unlink(), "docs.parquet: missing"),
    (lambda d: (d / MANIFEST_FILE).write_text("{not json", encoding="utf-8"), "manifest.json: corrupt manifest"),
    (lambda d: (d / MANIFEST_FILE).unlink(), "no index here"),
])
def test_corrupt_or_missing_index_is_a_clear_error(builtin_index, tmp_path, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(builtin_index.index_dir, copy)
    damage(copy)
    with pytest.raises(CotgenError, match=message) as e:
        RuleIndex.load(copy)
    assert "cotgen index build" in str(e.value)


def test_approximate_indexes_record_params_and_agree_with_exact(builtin_index, cache_home, tmp_path):
    _, pairs = probe_pairs()
    exact = [hit_ids(h) for h in search_pairs(builtin_index, pairs, k=5)]
    docs = builtin_index.docs
    for kind, params in (("hnsw", {"ef_search": 64}), ("ivf", {"nprobe": 8})):
        idx = RuleIndex.build(docs, tmp_path / kind, EMBEDDER, kind=kind, params=params,
                              cache_root=cache_home / "embeddings")
        manifest = json.loads((tmp_path / kind / MANIFEST_FILE).read_text(encoding="utf-8"))
        assert manifest["kind"] == kind and manifest["params"] == idx.manifest.params
        assert {**manifest["params"], **params} == manifest["params"]
        got = [hit_ids(h) for h in search_pairs(RuleIndex.load(tmp_path / kind), pairs, k=5)]
        same = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact, got, strict=True)])
        assert same >= 0.9, (kind, same)


def test_kind_choice_and_params():
    assert choose_kind("auto", 1_000) == "exact"
    assert choose_kind("auto", 1_000_000) == "ivf"
    assert choose_kind("hnsw", 10) == "hnsw"
    assert resolve_params("ivf", 1_000_000) == {"nlist": 1000, "nprobe": 8}
    assert resolve_params("ivf", 100)["nlist"] == 2
    assert resolve_params("ivf", 100, {"nprobe": 50}) == {"nlist": 2, "nprobe": 2}
    with pytest.raises(CotgenError, match="index.params: 'nprobe' is not a parameter of a hnsw index"):
        resolve_params("hnsw", 10, {"nprobe": 3})


# ---- CLI -------------------------------------------------------------------------------------------------


@pytest.fixture
def index_workspace(cli, tmp_path, builtin_index, cache_home) -> tuple[Path, dict[str, str]]:
    """A fresh workspace whose CLI calls share the session's embedding cache (so builds embed nothing new)."""
    ws = tmp_path / "ws"
    cli("init", str(ws))
    return ws, {"COTGEN_CACHE": str(cache_home)}


def test_cli_build_info_and_stage(cli, index_workspace):
    ws, env = index_workspace
    built = json.loads(cli("index", "build", "-w", str(ws), "--json", env=env).stdout)
    assert built["written"] and built["documents"] == len(load_documents(["builtin"])) and built["kind"] == "exact"
    assert Path(built["path"]) == ws / "indexes" / "rules"
    info = json.loads(cli("index", "info", "-w", str(ws), "--json", env=env).stdout)
    assert info["embedder"] == EMBEDDER and info["dim"] == 384 and info["by_kind"]["knowledge"] >= 5
    assert info["added"] == info["changed"] == info["removed"] == []
    table = cli("index", "info", "-w", str(ws), env=env).stdout
    assert "up to date" in table and "yes" in table
    out = cli("run", "-w", str(ws), "--stage", "index", "--json", env=env).stdout
    stage = json.loads(out)
    assert stage["index"]["written"] is False and stage["index"]["embedded"] == 0


def test_cli_search_and_errors(cli, index_workspace):
    ws, env = index_workspace
    missing = cli("index", "search", "dog food", "-w", str(ws), check=False, env=env)
    assert missing.returncode == 2 and "no index here" in missing.stderr and "Traceback" not in missing.stderr
    cli("index", "build", "-w", str(ws), env=env)
    found = json.loads(cli("index", "search", "case for iphone 12", "--item", "Clear Case for iPhone 15",
                           "-k", "3", "--scheme", "taosr4", "-w", str(ws), "--json", env=env).stdout)
    assert found["query"] == "query: case for iphone 12 | item: Clear Case for iPhone 15"
    assert [h["rank"] for h in found["hits"]] == [1, 2, 3]
    assert "compatibility" in found["hits"][0]["tags"]
    assert all("esci" not in h["schemes"] for h in found["hits"])
    table = cli("index", "search", "gift for dad", "--kind", "rule", "-w", str(ws), env={**env, "COLUMNS": "80"}).stdout
    assert "gift-recipient" in table and "search: gift for dad" in table.splitlines()
    rows = [line.split("│") for line in table.splitlines() if line.startswith("│")]
    assert all(len(line) <= 80 for line in table.splitlines())
    assert len(rows[0][-2].split()) >= 3, "titles wrap by words in a wide enough column, not one word per line"
    config = ws / "cotgen.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        'embedder = "bundled:all-minilm-l6-v2"', 'embedder = "bundled:other-model"'), encoding="utf-8")
    mismatch = cli("index", "search", "dog food", "-w", str(ws), check=False, env=env)
    assert mismatch.returncode == 2 and "built with embedder 'bundled:all-minilm-l6-v2'" in mismatch.stderr


def test_cli_bad_rule_file_is_one_line(cli, index_workspace):
    ws, env = index_workspace
    (ws / "my-rules").mkdir()
    (ws / "my-rules" / "r.md").write_text("---\nid: r\ntitle: t\ngrades: [L7]\n---\nbody\n", encoding="utf-8")
    config = ws / "cotgen.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(
        'rules = ["builtin"]', 'rules = ["builtin", "my-rules"]'), encoding="utf-8")
    bad = cli("index", "build", "-w", str(ws), check=False, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "r.md: grades: unknown grade 'L7'" in bad.stderr
    assert not (ws / "indexes").exists() or not any((ws / "indexes").iterdir())
