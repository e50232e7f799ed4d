"""The bad-input corpus (issue 18): every malformed input or hostile workspace ends in one line, never a traceback.

Each case runs the real CLI in a subprocess and checks: a non-zero exit, exactly one line on stderr naming the
file, row and field where there is one, no traceback, and the store's content unchanged. No model is loaded.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers_review import seed_samples

from conftest import run_cli

GOOD_CSV = "query,title,label\nred shoes,Red running shoes,L4\nblue mug,Ceramic mug blue,L3\nlamp,Desk lamp LED,L2\n"
LATIN1_CSV = "query,title,label\ncafé crème,Café crème 250 g,L4\nthé vert,Thé vert bio,L3\n".encode("latin-1")


@dataclass
class Ctx:
    """What a case builds on: a copy of the template workspace, a scratch folder and cleanups (unmounts)."""

    ws: Path
    tmp: Path
    cleanup: contextlib.ExitStack
    template: Path

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    def config(self, extra: str | bytes) -> None:
        """Append TOML (or raw bytes) to the workspace's cotgen.toml."""
        with (self.ws / "cotgen.toml").open("ab") as fh:
            fh.write(extra if isinstance(extra, bytes) else ("\n" + extra + "\n").encode())


@dataclass
class Expect:
    """The command to run and what its one error line must (and must not) say."""

    args: list[str]
    names: list[str]
    never: list[str] = field(default_factory=list)
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Ctx], Expect]


CASES: list[Case] = []


def case(name: str) -> Callable[[Callable[[Ctx], Expect]], Callable[[Ctx], Expect]]:
    def register(fn: Callable[[Ctx], Expect]) -> Callable[[Ctx], Expect]:
        CASES.append(Case(name, fn))
        return fn
    return register


def store_fingerprint(ws: Path) -> str:
    """A hash of every table's rows through a read-only DuckDB connection; a file DuckDB refuses is hashed as bytes."""
    path = ws / "store.duckdb"
    if not path.is_file():
        return "absent" if not path.exists() else "not a file"
    digest = hashlib.sha256()
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            tables = con.execute("SELECT table_name FROM information_schema.tables "
                                 "WHERE table_type = 'BASE TABLE' ORDER BY table_name").fetchall()
            for (table,) in tables:
                digest.update(table.encode())
                for row in con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall():
                    digest.update(repr(row).encode())
    except duckdb.Error:
        return "bytes:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return digest.hexdigest()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` read-only for this process: a read-only bind mount as root (root ignores file modes), else chmod."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    try:
        _mount("--bind", str(path), str(path))
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"read-only workspace: root here cannot bind-mount ({e}); a chmod would not stop root")
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)


@contextlib.contextmanager
def full_disk(path: Path, size: str = "8m") -> Iterator[None]:
    """A small tmpfs at `path`, filled to the last byte after the caller copied its files in (on exit of setup)."""
    if os.geteuid() != 0:
        pytest.skip("full disk: needs root to mount a small tmpfs; not faked")
    path.mkdir(parents=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"full disk: cannot mount a tmpfs here ({e}); not faked")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False, capture_output=True)


def fill(folder: Path) -> None:
    """Write filler until the file system says it is full."""
    with (folder / "filler.bin").open("wb", buffering=0) as fh:
        block = b"\0" * (64 << 10)
        with contextlib.suppress(OSError):
            while True:
                fh.write(block)
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0")


def ingest(ctx: Ctx, path: Path, *extra: str) -> list[str]:
    return ["ingest", str(path), "-w", str(ctx.ws), *extra]


# ---------------------------------------------------------------------------------------------------- ingest


@case("ingest-latin1-read-as-utf16")
def _c01(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", LATIN1_CSV), "--encoding", "utf-16"), ["pairs.csv", "utf-16"])


@case("ingest-encoding-rot13")
def _c02(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV), "--encoding", "rot13"), ["rot13", "text encoding"])


@case("ingest-encoding-base64")
def _c03(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV), "--encoding", "base64"), ["base64", "text encoding"])


@case("ingest-encoding-unknown")
def _c04(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV), "--encoding", "klingon"), ["klingon"])


@case("ingest-latin1-without-encoding")
def _c05(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", LATIN1_CSV)), ["pairs.csv", "--encoding"])


@case("ingest-symlink-loop")
def _c06(ctx: Ctx) -> Expect:
    a, b = ctx.tmp / "loop.csv", ctx.tmp / "loop2.csv"
    a.symlink_to(b)
    b.symlink_to(a)
    return Expect(ingest(ctx, a), ["loop.csv", "symlink"])


@case("ingest-format-xls")
def _c07(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV), "--format", "xls"), ["--format", "xls"])


@case("ingest-ragged-row")
def _c08(ctx: Ctx) -> Expect:
    text = GOOD_CSV + "sofa,Grey sofa,L1,extra,fields\nbed,Bed frame,L2\n"
    return Expect(ingest(ctx, ctx.write("pairs.csv", text)), ["pairs.csv:5", "5 fields", "3"])


@case("ingest-bare-cr-line-endings")
def _c09(ctx: Ctx) -> Expect:
    text = "query,title,label\r\nred shoes,Red shoes,L4\r\nblue mug,Blue mug,L3\rlamp,Desk lamp,L2\r\n"
    return Expect(ingest(ctx, ctx.write("pairs.csv", text)), ["pairs.csv:3", "CR"])


@case("ingest-unclosed-quote")
def _c10(ctx: Ctx) -> Expect:
    text = GOOD_CSV + 'sofa,"Grey sofa, three seats,L1\nbed,Bed frame,L2\n'
    return Expect(ingest(ctx, ctx.write("pairs.csv", text)), ["pairs.csv:5", "quote"])


@case("ingest-parquet-list-column")
def _c11(ctx: Ctx) -> Expect:
    path = ctx.tmp / "pairs.parquet"
    pq.write_table(pa.table({"query": ["shoes", "mug"], "title": [["Red", "shoes"], ["Mug"]], "label": ["L4", "L3"]}), path)
    return Expect(ingest(ctx, path), ["pairs.parquet", "title"])


@case("ingest-binary-named-csv")
def _c12(ctx: Ctx) -> Expect:
    junk = random.Random(18).randbytes(4096)
    return Expect(ingest(ctx, ctx.write("image.csv", junk)), ["image.csv"])


@case("ingest-missing-column")
def _c13(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", "query,title,stars\nshoes,Red shoes,L4\n")), ["pairs.csv", "'label'"])


@case("ingest-empty-file")
def _c14(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("empty.csv", "")), ["empty.csv", "empty"])


@case("ingest-header-only")
def _c15(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", "query,title,label\n")), ["pairs.csv", "no rows"])


@case("ingest-unknown-label")
def _c16(ctx: Ctx) -> Expect:
    text = "query,title,label\nred shoes,Red shoes,L4\nblue mug,Mug,Great\n"
    return Expect(ingest(ctx, ctx.write("pairs.csv", text)), ["pairs.csv:3", "label", "Great"])


@case("ingest-missing-query")
def _c17(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", "query,title,label\n,Red shoes,L4\n")), ["pairs.csv:2", "query"])


@case("ingest-directory")
def _c18(ctx: Ctx) -> Expect:
    (ctx.tmp / "folder.csv").mkdir()
    return Expect(ingest(ctx, ctx.tmp / "folder.csv"), ["folder.csv", "directory"])


@case("ingest-missing-file")
def _c19(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.tmp / "absent.csv"), ["absent.csv", "no such file"])


@case("ingest-jsonl-bad-line")
def _c20(ctx: Ctx) -> Expect:
    text = '{"query": "shoes", "title": "Red shoes", "label": "L4"}\n{"query": "mug", "title": \n'
    return Expect(ingest(ctx, ctx.write("pairs.jsonl", text)), ["pairs.jsonl:2"])


@case("ingest-unknown-extension")
def _c21(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.xlsx", GOOD_CSV)), ["pairs.xlsx", "--format"])


@case("ingest-bad-map")
def _c22(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV), "--map", "colour=title"), ["--map", "colour"])


@case("ingest-unknown-scheme")
def _c23(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV), "--scheme", "stars5"), ["stars5"])


@case("ingest-crowdflower-as-esci")
def _c24(ctx: Ctx) -> Expect:
    path = ctx.template.parent / "shared" / "crowdflower" / "train_dev.csv"
    args = ingest(ctx, path, "--scheme", "esci", "--map", "title=product_title,label=median_relevance")
    return Expect(args, ["train_dev.csv:2", "label", "esci"])


@case("ingest-truncated-parquet")
def _c25(ctx: Ctx) -> Expect:
    path = ctx.tmp / "pairs.parquet"
    pq.write_table(pa.table({"query": ["shoes"] * 50, "title": ["Red shoes"] * 50, "label": ["L4"] * 50}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Expect(ingest(ctx, path), ["pairs.parquet"])


@case("ingest-utf16-without-encoding")
def _c26(ctx: Ctx) -> Expect:
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV.encode("utf-16"))), ["pairs.csv"])


@case("ingest-binned-out-of-range")
def _c27(ctx: Ctx) -> Expect:
    text = "query,title,label\nred shoes,Red shoes,2.5\nblue mug,Mug,7\n"
    return Expect(ingest(ctx, ctx.write("pairs.csv", text), "--scheme", "homedepot"), ["pairs.csv:3", "label", "7"])


@case("ingest-jsonl-not-an-object")
def _c28(ctx: Ctx) -> Expect:
    text = '{"query": "shoes", "title": "Red shoes", "label": "L4"}\n["mug", "Mug", "L3"]\n'
    return Expect(ingest(ctx, ctx.write("pairs.jsonl", text)), ["pairs.jsonl:2"])


# ---------------------------------------------------------------------------------------------------- config


def status(ctx: Ctx) -> list[str]:
    return ["status", "-w", str(ctx.ws)]


@case("config-latin1-byte")
def _c30(ctx: Ctx) -> Expect:
    ctx.config("# caf\xe9 au lait".encode("latin-1"))
    return Expect(status(ctx), ["cotgen.toml", "byte"])


@case("config-invalid-toml")
def _c31(ctx: Ctx) -> Expect:
    ctx.config("[store\npath = 1")
    return Expect(status(ctx), ["cotgen.toml", "TOML"])


@case("config-unknown-key")
def _c32(ctx: Ctx) -> Expect:
    text = (ctx.ws / "cotgen.toml").read_text(encoding="utf-8").replace("[store]\n", '[store]\ncompression = "zstd"\n')
    (ctx.ws / "cotgen.toml").write_text(text, encoding="utf-8")
    return Expect(status(ctx), ["cotgen.toml", "store.compression", "unknown key"])


@case("config-wrong-type")
def _c33(ctx: Ctx) -> Expect:
    text = (ctx.ws / "cotgen.toml").read_text(encoding="utf-8").replace("lock_timeout_s = 30", 'lock_timeout_s = "soon"')
    (ctx.ws / "cotgen.toml").write_text(text, encoding="utf-8")
    return Expect(status(ctx), ["cotgen.toml", "store.lock_timeout_s"])


@case("config-source-unknown-scheme")
def _c34(ctx: Ctx) -> Expect:
    ctx.config('[[sources]]\nname = "more"\npath = "more.csv"\nscheme = "stars5"')
    return Expect(status(ctx), ["cotgen.toml", "sources.more.scheme", "stars5"])


@case("config-export-name-dotdot")
def _c35(ctx: Ctx) -> Expect:
    text = (ctx.ws / "cotgen.toml").read_text(encoding="utf-8").replace('[export]\nname = "relevance"', '[export]\nname = ".."')
    assert 'name = ".."' in text, "the template's [export] section changed; update this case"
    (ctx.ws / "cotgen.toml").write_text(text, encoding="utf-8")
    return Expect(["export", "-w", str(ctx.ws)], ["cotgen.toml", "export.name"])


@case("config-credentials-in-base-url")
def _c36(ctx: Ctx) -> Expect:
    text = (ctx.ws / "cotgen.toml").read_text(encoding="utf-8").replace(
        "[teacher]\n", '[teacher]\nbase_urls = ["http://alice:sk-SECRET123@127.0.0.1:9/v1"]\n', 1)
    (ctx.ws / "cotgen.toml").write_text(text, encoding="utf-8")
    return Expect(status(ctx), ["cotgen.toml", "teacher.base_urls", "api_key_env"], never=["sk-SECRET123"])


@case("generate-credentials-in-base-url-option")
def _c37(ctx: Ctx) -> Expect:
    args = ["generate", "-w", str(ctx.ws), "--backend", "openai", "--base-url", "http://bob:sk-SECRET456@127.0.0.1:9/v1"]
    return Expect(args, ["base_urls", "api_key_env"], never=["sk-SECRET456"])


@case("config-is-a-directory")
def _c38(ctx: Ctx) -> Expect:
    (ctx.ws / "cotgen.toml").unlink()
    (ctx.ws / "cotgen.toml").mkdir()
    return Expect(status(ctx), ["cotgen.toml", "directory"])


@case("config-missing")
def _c39(ctx: Ctx) -> Expect:
    return Expect(["status", "-w", str(ctx.tmp)], ["cotgen.toml", "cotgen init"])


# ---------------------------------------------------------------------------------------------------- rule files


def rules(ctx: Ctx, name: str, content: str | bytes) -> Expect:
    folder = ctx.ws / "myrules"
    folder.mkdir()
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    text = (ctx.ws / "cotgen.toml").read_text(encoding="utf-8").replace('rules = ["builtin"]', 'rules = ["myrules"]')
    (ctx.ws / "cotgen.toml").write_text(text, encoding="utf-8")
    return Expect(["index", "build", "-w", str(ctx.ws)], [name])


@case("rules-latin1-byte")
def _c40(ctx: Ctx) -> Expect:
    e = rules(ctx, "cafe.md", "---\nid: cafe\ntitle: Caf\xe9\n---\nCoffee is not tea.\n".encode("latin-1"))
    e.names[0] = "cafe.md:3"
    return e


@case("rules-no-front-matter")
def _c41(ctx: Ctx) -> Expect:
    e = rules(ctx, "plain.md", "Coffee is not tea.\n")
    e.names.append("front matter")
    return e


@case("rules-bad-yaml")
def _c42(ctx: Ctx) -> Expect:
    e = rules(ctx, "yaml.md", "---\nid: [unclosed\n---\nCoffee is not tea.\n")
    e.names.append("YAML")
    return e


@case("rules-unknown-field")
def _c43(ctx: Ctx) -> Expect:
    e = rules(ctx, "field.md", "---\nid: coffee\ncolour: brown\n---\nCoffee is not tea.\n")
    e.names.append("colour")
    return e


@case("rules-folder-missing")
def _c44(ctx: Ctx) -> Expect:
    text = (ctx.ws / "cotgen.toml").read_text(encoding="utf-8").replace('rules = ["builtin"]', 'rules = ["nowhere"]')
    (ctx.ws / "cotgen.toml").write_text(text, encoding="utf-8")
    return Expect(["index", "build", "-w", str(ctx.ws)], ["index.rules", "nowhere"])


# ---------------------------------------------------------------------------------------------------- review


def review(ctx: Ctx, *args: str) -> list[str]:
    return ["review", *args, "-w", str(ctx.ws)]


@case("review-import-latin1")
def _c50(ctx: Ctx) -> Expect:
    line = '{"annotator": "zo\xe9", "action": "accept", "pair_id": "x"}\n'.encode("latin-1")
    return Expect(review(ctx, "import", str(ctx.write("decisions.jsonl", line))), ["decisions.jsonl", "UTF-8"])


@case("review-import-bad-json")
def _c51(ctx: Ctx) -> Expect:
    text = '{"annotator": "zoe", "action": "accept", "pair_id": "x"}\n{"annotator": \n'
    return Expect(review(ctx, "import", str(ctx.write("decisions.jsonl", text))), ["decisions.jsonl:2"])


@case("review-import-empty")
def _c52(ctx: Ctx) -> Expect:
    return Expect(review(ctx, "import", str(ctx.write("decisions.jsonl", "\n"))), ["decisions.jsonl", "no records"])


@case("review-import-bad-action")
def _c53(ctx: Ctx) -> Expect:
    text = '{"annotator": "zoe", "action": "shrug", "pair_id": "x"}\n'
    return Expect(review(ctx, "import", str(ctx.write("decisions.jsonl", text))), ["decisions.jsonl:1", "action"])


@case("review-gold-latin1")
def _c54(ctx: Ctx) -> Expect:
    data = "pair_id,label,note\nabc,L4,caf\xe9\n".encode("latin-1")
    return Expect(review(ctx, "gold", str(ctx.write("gold.csv", data))), ["gold.csv", "UTF-8"])


@case("review-gold-no-header")
def _c55(ctx: Ctx) -> Expect:
    return Expect(review(ctx, "gold", str(ctx.write("gold.csv", "id,grade\nabc,L4\n"))), ["gold.csv:1", "pair_id"])


@case("review-gold-unknown-pair-names-file-line")
def _c56(ctx: Ctx) -> Expect:
    pair_id = first_pair(ctx.ws)
    text = f"pair_id,label\n{pair_id},L4\nnot-a-pair,L3\n"
    return Expect(review(ctx, "gold", str(ctx.write("gold.csv", text))), ["gold.csv:3:", "pair_id", "not-a-pair"])


@case("review-gold-row-after-a-two-line-note")
def _c56b(ctx: Ctx) -> Expect:
    text = f'pair_id,label,note\n{first_pair(ctx.ws)},L4,"checked twice,\nby two people"\nnot-a-pair,L3,\n'
    return Expect(review(ctx, "gold", str(ctx.write("gold.csv", text))), ["gold.csv:4:", "not-a-pair"])


@case("review-gold-bad-label")
def _c57(ctx: Ctx) -> Expect:
    text = f"pair_id,label\n{first_pair(ctx.ws)},L9\n"
    return Expect(review(ctx, "gold", str(ctx.write("gold.csv", text))), ["gold.csv:2:", "label", "L9"])


@case("review-export-to-a-directory")
def _c58(ctx: Ctx) -> Expect:
    out = ctx.tmp / "outdir"
    out.mkdir()

    def nothing_left() -> None:
        assert sorted(p.name for p in ctx.tmp.iterdir()) == ["outdir"], "a staged file was left behind"
    return Expect(review(ctx, "export", "-o", str(out)), ["outdir", "directory"], after=nothing_left)


@case("review-export-to-a-proc-file")
def _c59(ctx: Ctx) -> Expect:
    return Expect(review(ctx, "export", "-o", "/proc/version"), ["/proc/version"])


@case("review-export-into-read-only-folder")
def _c60(ctx: Ctx) -> Expect:
    out = ctx.tmp / "ro"
    out.mkdir()
    ctx.cleanup.enter_context(read_only(out))
    return Expect(review(ctx, "export", "-o", str(out / "reviews.jsonl")), [str(out)])


def first_pair(ws: Path) -> str:
    with duckdb.connect(str(ws / "store.duckdb"), read_only=True) as con:
        return con.execute("SELECT min(pair_id) FROM pairs").fetchone()[0]


# ---------------------------------------------------------------------------------------------------- dataset names


@case("export-name-dotdot")
def _c70(ctx: Ctx) -> Expect:
    def nothing_outside() -> None:
        assert not (ctx.ws / "v1").exists() and not (ctx.ws / "datasets" / "v1").exists()
    return Expect(["export", "..", "-w", str(ctx.ws)], ["'..'"], after=nothing_outside)


@case("export-name-dot")
def _c71(ctx: Ctx) -> Expect:
    return Expect(["export", ".", "-w", str(ctx.ws)], ["'.'"])


@case("export-name-with-slash")
def _c72(ctx: Ctx) -> Expect:
    return Expect(["export", "a/b", "-w", str(ctx.ws)], ["'a/b'"])


@case("export-name-with-space")
def _c73(ctx: Ctx) -> Expect:
    return Expect(["export", "my data", "-w", str(ctx.ws)], ["'my data'"])


@case("train-dataset-dotdot")
def _c74(ctx: Ctx) -> Expect:
    return Expect(["train", "sft", "-d", "..", "-w", str(ctx.ws)], ["'..'"])


@case("eval-dataset-dotdot")
def _c75(ctx: Ctx) -> Expect:
    return Expect(["eval", "-m", "bundled:smollm2-135m-instruct", "-d", "..:test", "-w", str(ctx.ws)], ["'..'"])


@case("datasets-show-dot")
def _c76(ctx: Ctx) -> Expect:
    return Expect(["datasets", "show", ".", "-w", str(ctx.ws)], ["'.'"])


@case("train-dataset-not-exported")
def _c77(ctx: Ctx) -> Expect:
    return Expect(["train", "sft", "-d", "nothing@v3", "-w", str(ctx.ws)], ["nothing"])


# ---------------------------------------------------------------------------------------------------- workspaces


@case("export-read-only-workspace")
def _c80(ctx: Ctx) -> Expect:
    ctx.cleanup.enter_context(read_only(ctx.ws))
    return Expect(["export", "-w", str(ctx.ws)], [str(ctx.ws)])


@case("ingest-read-only-workspace")
def _c81(ctx: Ctx) -> Expect:
    path = ctx.write("pairs.csv", GOOD_CSV)
    ctx.cleanup.enter_context(read_only(ctx.ws))
    return Expect(ingest(ctx, path), [str(ctx.ws)])


@case("review-gold-read-only-workspace")
def _c82(ctx: Ctx) -> Expect:
    path = ctx.write("gold.csv", f"pair_id,label\n{first_pair(ctx.ws)},L4\n")
    ctx.cleanup.enter_context(read_only(ctx.ws))
    return Expect(review(ctx, "gold", str(path)), [str(ctx.ws)])


@case("ingest-full-disk")
def _c83(ctx: Ctx) -> Expect:
    disk = ctx.tmp / "disk"
    ctx.cleanup.enter_context(full_disk(disk))
    shutil.copytree(ctx.ws, disk / "ws")
    ctx.ws = disk / "ws"
    rows = "".join(f"query {i},title {i} {'x' * 200},L{1 + i % 4}\n" for i in range(20_000))
    path = ctx.write("big.csv", "query,title,label\n" + rows)
    fill(disk)
    return Expect(ingest(ctx, path), ["no space left", str(disk)])


@case("review-import-read-only-workspace")
def _c82b(ctx: Ctx) -> Expect:
    line = json.dumps({"annotator": "zoe", "action": "accept", "pair_id": first_pair(ctx.ws)}) + "\n"
    path = ctx.write("decisions.jsonl", line)
    ctx.cleanup.enter_context(read_only(ctx.ws))
    return Expect(review(ctx, "import", str(path)), [str(ctx.ws)])


@case("init-onto-a-file")
def _c82c(ctx: Ctx) -> Expect:
    target = ctx.write("taken", "a file\n")
    return Expect(["init", str(target)], ["taken", "a file, not a folder"])


@case("init-in-a-read-only-folder")
def _c82d(ctx: Ctx) -> Expect:
    parent = ctx.tmp / "locked"
    parent.mkdir()
    ctx.cleanup.enter_context(read_only(parent))
    return Expect(["init", "--example", str(parent / "ws")], [str(parent)])


@case("review-gold-full-disk")
def _c83b(ctx: Ctx) -> Expect:
    path = ctx.write("gold.csv", f"pair_id,label\n{first_pair(ctx.ws)},L4\n")
    disk = ctx.tmp / "disk"
    ctx.cleanup.enter_context(full_disk(disk))
    shutil.copytree(ctx.ws, disk / "ws")
    ctx.ws = disk / "ws"
    fill(disk)
    return Expect(review(ctx, "gold", str(path)), ["store.duckdb", "No space left"])


@case("export-full-disk")
def _c83e(ctx: Ctx) -> Expect:
    disk = ctx.tmp / "disk"
    ctx.cleanup.enter_context(full_disk(disk))
    shutil.copytree(ctx.ws, disk / "ws")
    ctx.ws = disk / "ws"
    fill(disk)

    def nothing_half_written() -> None:
        assert not list((disk / "ws" / "datasets").rglob("*.parquet")), "a half-written version was left behind"
    return Expect(["export", "-w", str(ctx.ws)], [str(disk)], after=nothing_half_written)


@case("ingest-rejects-folder-read-only")
def _c83c(ctx: Ctx) -> Expect:
    path = ctx.write("pairs.csv", GOOD_CSV + "sofa,Grey sofa,GREAT\n")
    (ctx.ws / "rejects").mkdir()
    ctx.cleanup.enter_context(read_only(ctx.ws / "rejects"))
    return Expect(ingest(ctx, path, "--skip-bad"), [str(ctx.ws / "rejects")])


@case("review-export-under-a-file")
def _c83d(ctx: Ctx) -> Expect:
    blocker = ctx.write("notes.txt", "a file, not a folder\n")
    return Expect(review(ctx, "export", "-o", str(blocker / "reviews.jsonl")), ["notes.txt", "a file where a folder"])


@case("status-truncated-store")
def _c84(ctx: Ctx) -> Expect:
    store = ctx.ws / "store.duckdb"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 3])
    return Expect(status(ctx), ["store.duckdb", "damaged"])


@case("status-store-not-duckdb")
def _c85(ctx: Ctx) -> Expect:
    (ctx.ws / "store.duckdb").write_text("query,title,label\n" * 500, encoding="utf-8")
    return Expect(status(ctx), ["store.duckdb", "not a cotgen store"])


@case("ingest-truncated-store")
def _c86(ctx: Ctx) -> Expect:
    store = ctx.ws / "store.duckdb"
    store.write_bytes(store.read_bytes()[:4096])
    return Expect(ingest(ctx, ctx.write("pairs.csv", GOOD_CSV)), ["store.duckdb", "damaged"])


@case("store-is-a-directory")
def _c87(ctx: Ctx) -> Expect:
    (ctx.ws / "store.duckdb").unlink()
    (ctx.ws / "store.duckdb").mkdir()
    return Expect(status(ctx), ["store.duckdb"])


# ---------------------------------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """An example workspace with its pairs ingested and a seeded teacher run (so export has rows to write)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ws = root / "ws"
    run_cli("init", "--example", str(ws))
    run_cli("ingest", "-w", str(ws))
    seed_samples(ws, per_pair=2)
    (root / "shared").symlink_to(shared_data)
    return ws


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(bad: Case, template: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    scratch = tmp_path / "in"
    scratch.mkdir()
    with contextlib.ExitStack() as cleanup:
        ctx = Ctx(ws=ws, tmp=scratch, cleanup=cleanup, template=template)
        expect = bad.make(ctx)
        before = store_fingerprint(ctx.ws)
        proc = run_cli(*expect.args, check=False, timeout=120)
        report = f"cotgen {' '.join(expect.args)}\nexit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        assert proc.returncode != 0, report
        assert "Traceback" not in proc.stderr + proc.stdout, report
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, report
        line = lines[0]
        assert line.isprintable() and len(line) < 400, report
        for name in expect.names:
            assert name in line, f"the error does not name {name!r}\n{report}"
        for secret in expect.never:
            assert secret not in proc.stdout + proc.stderr, report
        if expect.after:
            expect.after()
        assert store_fingerprint(ctx.ws) == before, f"the store changed\n{report}"


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES), "two cases share a name"


def test_fingerprint_sees_a_changed_row(template: Path, tmp_path: Path) -> None:
    """The fingerprint is not blind: one changed cell changes it."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    before = store_fingerprint(ws)
    with duckdb.connect(str(ws / "store.duckdb")) as con:
        con.execute("UPDATE pairs SET title = title || '!' WHERE pair_id = (SELECT min(pair_id) FROM pairs)")
    assert store_fingerprint(ws) != before


def test_review_export_creates_missing_folders_and_says_so(template: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    out = tmp_path / "new" / "deeper" / "reviews.jsonl"
    proc = run_cli("review", "export", "-o", str(out), "-w", str(ws))
    assert out.is_file()
    said = " ".join(proc.stderr.split())  # rich wraps long notices
    assert f"created the folder {tmp_path / 'new'} " in said + " "
    assert f"created the folder {tmp_path / 'new' / 'deeper'} " in said + " "
    assert [p.name for p in out.parent.iterdir()] == ["reviews.jsonl"], "a staged file was left behind"


def test_ingest_stages_under_the_workspace_and_clears_stale_stages(template: Path, tmp_path: Path) -> None:
    """Staging lives in <ws>/.cotgen/tmp (never the system temp dir); a killed run's stage goes on the next start."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    dead = subprocess.Popen(["true"])
    dead.wait()
    scratch = ws / ".cotgen" / "tmp"
    stale, live = scratch / f"ingest-{dead.pid}-x1", scratch / f"ingest-{os.getpid()}-x2"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "staged.parquet").write_bytes(b"\0" * 1024)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(GOOD_CSV, encoding="utf-8")
    run_cli("ingest", str(pairs), "-w", str(ws), env={"TMPDIR": str(system_tmp)})
    assert not stale.exists(), "a dead process's stage was left behind"
    assert live.exists(), "a running process's stage was removed"
    assert sorted(p.name for p in scratch.iterdir()) == [live.name], "this run left its stage behind"
    assert list(system_tmp.iterdir()) == [], "ingest wrote to the system temp dir"


def test_rejects_csv_escapes_formula_cells(template: Path, tmp_path: Path) -> None:
    """Cells a spreadsheet would run as formulas (starting = + - @) are written with a leading quote."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    hostile = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)"]
    rows = "".join(f'"{q}",Item {i},BAD\n' for i, q in enumerate(hostile)) + 'lamp,Desk lamp,"=HYPERLINK(""x"")"\n'
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,title,label\nred shoes,Red shoes,L4\n" + rows, encoding="utf-8", newline="")
    run_cli("ingest", str(pairs), "-w", str(ws), "--skip-bad")
    [rejects] = (ws / "rejects").glob("*.rejects.csv")
    with rejects.open(encoding="utf-8", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert sorted(r["query"] for r in written) == sorted(["lamp", *("'" + q for q in hostile)])
    assert "'=HYPERLINK(\"x\")" in [r["raw_label"] for r in written]
    cells = [v for r in written for v in r.values()]
    assert not [v for v in cells if v[:1] in ("=", "+", "-", "@", "\t", "\r")]
