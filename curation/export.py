"""Versioned Hugging Face export: datasets/NAME/vK/ with a DatasetDict per kind, Parquet, manifest and card.

The store is read once (read-only, released before any file is written); the version is written beside
its final place and renamed in one step, so an interrupted export leaves no version. Same rows, same
content hash: no new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.datasets import MANIFEST, SPLITS_FILE, latest_version, read_manifest, register_versions
from curation.export_card import render_card
from curation.outputs import pid_alive
from curation.pairs import pair_from_row
from curation.queries import sql
from curation.report import PLOTS_DIR, report_data, write_plots
from curation.select_dpo import select_dpo
from curation.select_grpo import select_grpo
from curation.select_sft import balance_sft_train, select_sft
from curation.select_steps import select_steps
from curation.selection import DROPPED_SCHEMA, Embed, SelectionContext, dropped_counts, open_selection
from curation.splits import assign_splits
from curation.stats import teacher_quality
from curation.store import Store, open_store, registered
from schemas.answer import LABEL_LINE, STEP_TITLES, AnswerOrder
from schemas.datasets import check_dataset_name
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.workspace import Workspace

KINDS = ("sft", "dpo", "grpo", "steps")
# Every version also carries `eval`: every labelled pair of every split with the policy prompt and the gold
# label, so evaluation, CumPT calibration and every later model score the same pairs whatever was selected.
EVAL_KIND = "eval"
SELECTORS: dict[str, Callable[[SelectionContext], dict[str, Any]]] = {
    "sft": select_sft, "dpo": select_dpo, "grpo": select_grpo, "steps": select_steps,
}
# The split the trainers read; class balancing (curation.sft_balance) applies to it alone.
TRAIN_SPLIT = "train"
RenderPrompt = Callable[[Pair], list[dict]]
Progress = Callable[[str], None]
PROMPT_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
PROMPT_BATCH = 100_000
# Column order of each kind as written; `completion`, `chosen` and `rejected` are one assistant message.
FINAL_COLUMNS = {
    "sft": ["prompt", "completion", "reasoning_content", "pair_id", "query_id", "label", "stage", "difficulty",
            "sample_id"],
    "dpo": ["prompt", "chosen", "rejected", "pair_id", "query_id", "label", "chosen_from", "chosen_sample_id",
            "rejected_sample_id", "difficulty", "stage"],
    "grpo": ["prompt", "label", "difficulty", "scheme", "pair_id", "query_id", "stage", "n", "c"],
    "steps": ["prompt", "completions", "labels", "label_sources", "pair_id", "query_id", "label", "sample_id", "difficulty",
              "stage"],
    EVAL_KIND: ["pair_id", "query_id", "prompt", "label", "scheme"],
}
MESSAGE_COLUMNS = ("completion", "chosen", "rejected")
# Every row the selections left out, with its reason; informative only, so outside the content hash.
DROPPED_FILE = "dropped.parquet"



@dataclass
class ExportResult:
    name: str
    version: int | None
    path: Path | None
    created: bool
    content_hash: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": str(self.path) if self.path else None,
                "created": self.created, "content_hash": self.content_hash, "counts": self.counts,
                "selection": self.selection, "dropped": self.dropped}


@dataclass
class Selected:
    """Everything read from the store for one export; the store is closed once this exists."""

    tables: dict[str, pa.Table]
    row_hashes: dict[str, pa.ChunkedArray]
    selection: dict[str, Any]
    splits: pa.Table
    scheme_names: list[str]
    runs: list[dict[str, Any]]
    pass_at_k: dict[str, float]
    teacher_quality: dict[str, dict[str, Any]]
    prompt_hash: str
    prompt_renderer: str
    dropped: pa.Table
    dropped_counts: dict[str, dict[str, int]]


def _messages_array(prompts: Iterable[object], pair_ids: list[str]) -> pa.Array:
    """list<struct<role, content>> built from flat columns (much faster than pa.array on nested dicts)."""
    roles: list[str] = []
    contents: list[str] = []
    offsets = [0]
    for messages, pair_id in zip(prompts, pair_ids, strict=True):
        if type(messages) is not list or not messages:
            raise CotgenError(f"policy prompt for pair {pair_id}: expected a non-empty list of messages, got {messages!r:.80}")
        for m in messages:
            role, content = (m.get("role"), m.get("content")) if type(m) is dict else (None, None)
            if type(role) is not str or type(content) is not str:
                raise CotgenError(f"policy prompt for pair {pair_id}: a message is not {{role: str, content: str}}: {m!r:.80}")
            roles.append(role)
            contents.append(content)
        offsets.append(len(roles))
    structs = pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string())],
                                        names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), structs)


def _render_prompts(store: Store, render: RenderPrompt) -> pa.Table:
    """The policy prompt of every exported pair, rendered once per pair: (pair_id, prompt) by pair id.

    Batches turn into Arrow as they go, so Python objects never hold more than one batch of prompts.
    """
    pairs = store.con.sql(sql("export.prompt_pairs")).to_arrow_table()
    ids, prompts = [], []
    for batch in pairs.to_batches(PROMPT_BATCH):
        ids.append(batch.column(0))
        prompts.append(_messages_array((render(pair_from_row(r)) for r in batch.to_pylist()), batch.column(0).to_pylist()))
    if not ids:
        return pa.table({"pair_id": pa.array([], pa.string()), "prompt": pa.array([], PROMPT_TYPE)})
    return pa.table({"pair_id": pa.chunked_array(ids), "prompt": pa.chunked_array(prompts, PROMPT_TYPE)})


def _assistant(texts: pa.ChunkedArray) -> pa.Array:
    """One assistant message per text, as list<struct<role, content>>."""
    content = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    n = len(content)
    structs = pa.StructArray.from_arrays([pa.repeat(pa.scalar("assistant"), n), content], names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(range(n + 1), pa.int32()), structs)


ROW_ORDER = [("split", "ascending"), ("stage", "ascending"), ("draw", "ascending"), ("pair_id", "ascending")]


def assemble(kind: str, flat: pa.Table, prompts: pa.Table) -> pa.Table:
    """The rows as TRL reads them (plus `split`), in export order: prompts joined back by pair id, texts made
    messages. Curriculum order inside a split: by stage, then the seeded draw."""
    flat = flat.take(pc.sort_indices(flat, sort_keys=ROW_ORDER))
    columns = {"split": flat["split"]}
    for name in FINAL_COLUMNS[kind]:
        if name == "prompt":
            where = pc.index_in(flat["pair_id"], value_set=prompts["pair_id"].combine_chunks())
            columns[name] = prompts["prompt"].combine_chunks().take(where)
        elif name in MESSAGE_COLUMNS:
            columns[name] = _assistant(flat[f"{name}_text"])
        else:
            columns[name] = flat[name]
    return pa.table(columns)


def split_parts(table: pa.Table, splits: list[str]) -> dict[str, pa.Table]:
    """Each split's rows as a zero-copy slice (the table is sorted by split), without the split column."""
    counts = {c["values"]: c["counts"] for c in pc.value_counts(table["split"]).to_pylist()}
    starts, offset = {}, 0
    for name in sorted(counts):  # the order Arrow sorted them in
        starts[name], offset = offset, offset + counts[name]
    rows = table.drop_columns(["split"])
    return {s: rows.slice(starts[s], counts[s]) if s in counts else rows.slice(0, 0) for s in splits}


def _check_schemes(ws: Workspace, names: list[str]) -> None:
    """One dataset, one set of grades: schemes that differ in grade ids cannot share a `label` column."""
    grades = {n: ws.config.scheme(n).ids for n in names}
    if len({tuple(g) for g in grades.values()}) > 1:
        listed = "; ".join(f"{n}: {', '.join(g)}" for n, g in grades.items())
        raise CotgenError(f"export: the pairs use label schemes with different grades ({listed}); "
                          "pick sources with one scheme in [export].sources")


def _run_record(run: Any) -> dict[str, Any]:
    return {"run_id": run.run_id, "name": run.name, "role": run.role, "model": run.model, "backend": run.backend,
            "prompt_name": run.prompt_name, "prompt_hash": run.prompt_hash, "gold_shown": run.gold_shown}


def select_rows(ws: Workspace, store: Store, kinds: list[str], order: AnswerOrder, sources: list[str],
                render: RenderPrompt, embed: Embed | None, previous_splits: pa.Table | None, version: int,
                progress: Progress) -> Selected:
    """Run the selections for `kinds` and assemble the final rows (prompts, splits) as Arrow tables."""
    ctx = open_selection(store, ws.config, order, sources, embed)
    selection = {}
    for kind in kinds:
        progress(f"selecting {kind}")
        selection[kind] = SELECTORS[kind](ctx)
    store.con.execute(sql("export.export_pairs"))
    scheme_names = [name for name, _n in store.rows(sql("export.schemes"))]
    _check_schemes(ws, scheme_names)
    progress("splitting by query")
    splits = assign_splits(store, ws.config.curation.seed, ws.config.curation.split, previous_splits, version)
    if "sft" in kinds and ws.config.curation.sft_balance is not None:
        selection["sft"] = balance_sft_train(ctx, TRAIN_SPLIT)
    progress("rendering policy prompts")
    prompts = _render_prompts(store, render)
    progress("assembling rows")
    tables, row_hashes = {}, {}
    with registered(store, "prompts", prompts):
        store.con.execute(sql("export.prompt_hashes"))
        for kind in (*kinds, EVAL_KIND):
            flat = store.con.sql(sql(f"export.final_{kind}")).to_arrow_table()
            tables[kind], row_hashes[kind] = assemble(kind, flat, prompts), flat["row_hash"]
    pass_at_k = {str(k): float(v) for _run, k, v, _pairs in store.rows(sql("stats.run_pass_at_k").format(c="c"))}
    dropped = store.con.sql(sql("selection.dropped_rows")).to_arrow_table().cast(DROPPED_SCHEMA)
    cur = ws.config.curation
    quality = teacher_quality(store, ctx.teacher_runs, cur.repetition_ngram, cur.max_ngram_repeats)
    names = {r.run_id: r.name for r in ctx.teacher_runs}
    return Selected(dropped=dropped, dropped_counts=dropped_counts(store),
                    teacher_quality={names[run_id]: asdict(q) for run_id, q in quality.items()},
                    tables=tables, row_hashes=row_hashes, selection=selection, splits=splits,
                    scheme_names=scheme_names, runs=[_run_record(r) for r in ctx.runs], pass_at_k=pass_at_k,
                    prompt_hash=digest(store.con.sql(sql("export.prompt_hash_column")).to_arrow_table()[0]),
                    prompt_renderer=f"{getattr(render, '__module__', '?')}.{getattr(render, '__qualname__', repr(render))}")


def digest(hashes: pa.ChunkedArray | pa.Array) -> str:
    """sha256 of the sorted per-row hashes (64-bit numbers or hex strings): same rows, same digest, any order."""
    if pa.types.is_integer(hashes.type):
        return hashlib.sha256(np.sort(hashes.to_numpy()).astype("<u8").tobytes()).hexdigest()
    ordered = hashes.take(pc.sort_indices(hashes)).to_pylist()
    return hashlib.sha256("\n".join(ordered).encode()).hexdigest()


def content_hash(kind_hashes: dict[str, str]) -> str:
    lines = "\n".join(f"{kind}:{h}" for kind, h in sorted(kind_hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def split_names(fractions: dict[str, float], tables: dict[str, pa.Table]) -> list[str]:
    """The configured splits, plus any an earlier version pinned queries to under another name."""
    extra = {s for t in tables.values() for s in pc.unique(t["split"]).to_pylist()} - set(fractions)
    return [*fractions, *sorted(extra)]


def _write_kind(folder: Path, kind: str, table: pa.Table, splits: list[str], fingerprint: str) -> dict[str, int]:
    """One kind: a DatasetDict via save_to_disk under <kind>/ and one Parquet file per split under data/<kind>/.

    Empty splits are left out of both (datasets cannot load an empty split back from disk); counts keep them.
    """
    import datasets
    from datasets.table import InMemoryTable

    every = split_parts(table, splits)
    counts = {s: t.num_rows for s, t in every.items()}
    parts = {s: t for s, t in every.items() if t.num_rows}
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # our own progress display is running
    try:
        # An explicit fingerprint: without one, datasets hashes every row to make one up.
        dd = datasets.DatasetDict({s: datasets.Dataset(InMemoryTable(t), fingerprint=f"{fingerprint}-{s}")
                                   for s, t in parts.items()})
        dd.save_to_disk(str(folder / kind))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    data = folder / "data" / kind
    data.mkdir(parents=True, exist_ok=True)
    for s, t in parts.items():
        pq.write_table(t, data / f"{s}.parquet")
    return counts


def _stale_temp_dirs(root: Path) -> list[Path]:
    """Leftovers of exports that were killed: temp dirs whose writing process is gone."""
    stale = []
    for p in root.glob(".v*.tmp-*"):
        m = re.match(r"\.v\d+\.tmp-(\d+)-", p.name)
        if not pid_alive(int(m.group(1)) if m else -1):
            stale.append(p)
    return stale


def answer_format(order: AnswerOrder) -> dict[str, Any]:
    """How targets are written, so training and evaluation need nothing from the workspace."""
    return {"order": order, "label_line": LABEL_LINE,
            "steps": [{"name": n, "title": t} for n, t in STEP_TITLES.items()]}


def build_manifest(ws: Workspace, name: str, version: int, parent: int | None, chash: str,
                   kind_hashes: dict[str, str], order: AnswerOrder, kinds: list[str], sel: Selected,
                   written: dict[str, pa.Table], counts: dict[str, dict[str, int]], sources: list[str]) -> dict[str, Any]:
    cfg = ws.config
    scheme = ws.config.scheme(sel.scheme_names[0]) if sel.scheme_names else None
    export_cfg = {**cfg.export.model_dump(mode="json"), "name": name, "kinds": kinds, "format": order, "sources": sources}
    return {
        "name": name, "version": version, "parent": parent, "content_hash": chash, "kind_hashes": kind_hashes,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "toolkit_version": metadata.version("cotgen"), "duckdb_version": duckdb.__version__,
        "format": order, "answer_format": answer_format(order),
        "scheme": scheme.model_dump() if scheme else None, "schemes_used": sel.scheme_names,
        "kinds": sorted(counts), "counts": counts,
        "splits": {"file": SPLITS_FILE, "fractions": cfg.curation.split, "seed": cfg.curation.seed,
                   "queries": {s: n for s, n in zip(*_split_query_counts(sel.splits), strict=True)}},
        "selection": sel.selection,
        "dropped": {"file": DROPPED_FILE, "counts": sel.dropped_counts},
        "statistics": {"policy_pass_at_k": sel.pass_at_k, "teacher_quality": sel.teacher_quality,
                       **_table_statistics(written)},
        "runs": sel.runs,
        "models": sorted({r["model"] for r in sel.runs}),
        "prompt_hashes": {**{r["name"]: r["prompt_hash"] for r in sel.runs},
                          "policy_prompt": sel.prompt_hash},
        "policy_prompt_renderer": sel.prompt_renderer,
        "config": {"curation": cfg.curation.model_dump(mode="json"), "export": export_cfg,
                   "teacher": cfg.teacher.model_dump(mode="json"), "policy": cfg.policy.model_dump(mode="json")},
    }


def _split_query_counts(splits: pa.Table) -> tuple[list[str], list[int]]:
    counts = splits.group_by("split").aggregate([("query_id", "count")]).sort_by("split")
    return counts["split"].to_pylist(), counts["query_id_count"].to_pylist()


def _value_counts(table: pa.Table, column: str) -> dict[str, int]:
    counts = pc.value_counts(table[column]).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in sorted(counts, key=lambda c: str(c["values"]))}


def _table_statistics(tables: dict[str, pa.Table]) -> dict[str, Any]:
    trained = {k: t for k, t in tables.items() if k != EVAL_KIND}  # eval rows have no difficulty or stage
    return {
        "labels": {k: _value_counts(t, "label") for k, t in tables.items()},
        "difficulty": {k: _value_counts(t, "difficulty") for k, t in trained.items()},
        "stages": {k: _value_counts(t, "stage") for k, t in trained.items()},
    }


def export_dataset(ws: Workspace, name: str, kinds: list[str], order: AnswerOrder, render: RenderPrompt,
                   embed: Embed | None = None, sources: list[str] | None = None,
                   progress: Progress | None = None) -> ExportResult:
    """Select, split and write `name` as a new version, unless its rows equal the latest version's."""
    say = progress or (lambda _msg: None)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise CotgenError(f"export: unknown kind {', '.join(unknown) or '(none)'} (kinds: {', '.join(KINDS)})")
    check_dataset_name(name)
    sources = sources if sources is not None else ws.config.export.sources
    root = ws.datasets_dir / name
    for stale in _stale_temp_dirs(root):
        shutil.rmtree(stale, ignore_errors=True)
    previous = latest_version(ws.datasets_dir, name)
    previous_splits = pq.read_table(previous / SPLITS_FILE) if previous and (previous / SPLITS_FILE).exists() else None
    parent = int(previous.name[1:]) if previous else None
    version = (parent or 0) + 1
    with open_store(ws, read_only=True) as store:
        sel = select_rows(ws, store, kinds, order, sources, render, embed, previous_splits, version, say)
        figures = report_data(store, sel.splits, [r["name"] for r in sel.runs] or None)
    written = {k: t for k, t in sel.tables.items() if t.num_rows}
    say("hashing rows")
    kind_hashes = {k: digest(sel.row_hashes[k]) for k in written}
    chash = content_hash(kind_hashes)
    if not any(k in written for k in kinds):  # evaluation pairs alone are no dataset
        return ExportResult(name, None, None, False, "", {k: {} for k in kinds}, sel.selection, sel.dropped_counts)
    if previous is not None and read_manifest(previous).get("content_hash") == chash:
        _register(ws, name, say)
        manifest = read_manifest(previous)
        return ExportResult(name, parent, previous, False, chash, manifest.get("counts", {}), sel.selection,
                            sel.dropped_counts)
    final = root / f"v{version}"
    tmp = root / f".v{version}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        splits = split_names(ws.config.curation.split, written)
        counts = {}
        for kind, table in written.items():
            say(f"writing {kind}")
            counts[kind] = _write_kind(tmp, kind, table, splits, kind_hashes[kind][:16])
        pq.write_table(sel.splits, tmp / SPLITS_FILE)
        pq.write_table(sel.dropped, tmp / DROPPED_FILE)  # beside the rows, not part of the content hash
        manifest = build_manifest(ws, name, version, parent, chash, kind_hashes, order, kinds, sel, written, counts,
                                  sources)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        write_plots(figures, tmp / PLOTS_DIR, f"{name} v{version}")  # the card embeds them
        (tmp / "README.md").write_text(render_card(manifest, {k: t.schema for k, t in written.items()}), encoding="utf-8")
        say("publishing")
        if final.exists():
            raise CotgenError(f"{final}: another export created this version meanwhile; run the export again")
        os.rename(tmp, final)
    except OSError as e:  # a full or read-only disk: the writers below datasets often do not name the file
        raise CotgenError(f"{final}: cannot write this version ({e.strerror or e}); nothing was published") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _register(ws, name, say)
    return ExportResult(name, version, final, True, chash, counts, sel.selection, sel.dropped_counts)


def _register(ws: Workspace, name: str, say: Progress) -> None:
    """Record versions on disk in dataset_versions (a short write; an earlier crash here is caught up)."""
    say("registering")
    with open_store(ws) as store:
        register_versions(store, ws.datasets_dir, name)
