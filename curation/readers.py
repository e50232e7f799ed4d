"""Open a source of labelled pairs as lazy frames: CSV/TSV/JSONL/Parquet files, Parquet shards, saved HF datasets.

A source is one or more *parts* (a file, a Parquet shard, a split of a saved `DatasetDict`); errors name
the part and its row. Which column holds each field is mapped (config, `--map`) or detected from headers.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import glob
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from curation.jsonl import json_objects
from schemas.config import ColumnMap
from schemas.errors import CotgenError, require_file

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
UTF8 = {"utf-8", "utf8", "utf-8-sig"}
GLOB_CHARS = set("*?[")

# Header names (compared case-insensitively) that say which field a column holds.
KNOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    "query": ("query", "search_term", "keyword", "keywords", "search_query"),
    "title": ("product_title", "title", "name", "product_name"),
    "description": ("product_description", "description", "product_text"),
    "label": ("label", "median_relevance", "relevance", "esci_label", "grade"),
    "id": ("id", "record_id", "example_id", "pair_id"),
}
REQUIRED = ("query", "title", "label")


@dataclass(frozen=True)
class Part:
    """One readable piece of a source; `first_row` is the row number of its first record in messages."""

    name: str
    frame: pl.LazyFrame
    first_row: int
    jsonl: Path | None = None  # the (UTF-8) JSON Lines file behind `frame`, for checks polars cannot make
    text: Path | None = None  # the (UTF-8) CSV/TSV file behind `frame`, to find a malformed row polars names not


def is_hf_dataset(path: Path) -> bool:
    """A directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def source_files(path_text: str) -> list[Path]:
    """The files a source path stands for: itself, the files of a dataset directory, or a glob's matches."""
    path = Path(path_text)
    if GLOB_CHARS & set(path_text):
        found = sorted(Path(p) for p in glob.glob(path_text, recursive=True) if Path(p).is_file())
        if not found:
            raise CotgenError(f"{path_text}: no file matches")
        return found
    if is_hf_dataset(path):
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_dir():
        shards = sorted(path.rglob("*.parquet"))
        if shards:
            return shards
    require_file(path)
    if path.stat().st_size == 0:
        raise CotgenError(f"{path}: the file is empty")
    return [path]


def detect_format(path_text: str, declared: str) -> str:
    """The declared format, or one told by the path: a dataset directory, Parquet shards, an extension."""
    if declared != "auto":
        return declared
    path = Path(path_text)
    if is_hf_dataset(path):
        return "hf"
    if path.is_dir() or GLOB_CHARS & set(path_text):
        return "parquet"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CotgenError(f"{path}: cannot tell the format from '{path.suffix}'; "
                          "pass --format csv|tsv|parquet|jsonl|hf")
    return fmt


def content_sha256(files: Iterable[Path], split: str | None = None) -> str:
    """One hash of the files' bytes in order (and the split read): the same content under another name is recognised."""
    digest = hashlib.sha256(f"split={split}\n".encode() if split else b"")
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def transcode(path: Path, encoding: str, workdir: Path) -> Path:
    """Stream a non-UTF-8 text file into a UTF-8 copy (polars reads UTF-8 only); memory stays flat."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    except LookupError:
        raise CotgenError(f"{path}: unknown encoding '{encoding}'") from None
    target = workdir / "utf8.txt"
    with path.open("rb") as src, target.open("w", encoding="utf-8", newline="") as dst:
        try:
            while chunk := src.read(1 << 24):
                dst.write(decoder.decode(chunk))
            dst.write(decoder.decode(b"", final=True))
        except UnicodeError as e:  # a decode error, or a codec's own complaint (utf-16 without a byte-order mark)
            where = f"{e.reason} near byte {e.start}" if isinstance(e, UnicodeDecodeError) else str(e)
            raise CotgenError(f"{path}: not valid {encoding}: {where}") from None
    return target


def _check_header(path: Path, shown: Path, separator: str) -> None:
    """Duplicate header names are an error: polars would rename the second and ingest silently ignore it."""
    with path.open(encoding="utf-8", newline="", errors="replace") as f:
        header = next(csv.reader(f, delimiter=separator), [])
    seen: dict[str, int] = {}
    for name in header:
        seen[name] = seen.get(name, 0) + 1
    repeated = [n for n, c in seen.items() if c > 1]
    if repeated:
        raise CotgenError(f"{shown}: the header repeats {', '.join(repr(n) for n in repeated)}; "
                          "rename the columns so each name is unique")


def _hf_parts(path: Path, split: str | None, workdir: Path) -> list[Part]:
    """Each split of a saved dataset as a Parquet file in `workdir`, copied batch by batch from its memory-mapped
    Arrow files: memory stays flat, and polars scans it like any Parquet source."""
    import pyarrow.parquet as pq
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(path))
    splits = {"": loaded} if isinstance(loaded, Dataset) else dict(loaded)
    if split is not None:
        if split not in splits:
            raise CotgenError(f"{path}: no split '{split}' (splits: {', '.join(splits) or 'none'})")
        splits = {split: splits[split]}
    parts = []
    for i, (name, ds) in enumerate(splits.items()):
        target = workdir / f"split-{i}.parquet"
        table = ds.data.table
        with pq.ParquetWriter(target, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=1 << 16):
                writer.write_batch(batch)
        parts.append(Part(f"{path}[{name}]" if name else str(path), pl.scan_parquet(target), 1))
    return parts


def open_parts(path_text: str, fmt: str, encoding: str, split: str | None, workdir: Path) -> list[Part]:
    """Lazy frames over every part of a source (non-UTF-8 text transcoded first)."""
    if fmt == "hf":
        return _hf_parts(Path(path_text), split, workdir)
    files = source_files(path_text)
    if fmt == "parquet":
        return [Part(str(f), pl.scan_parquet(f), 1) for f in files]
    [path] = files
    readable = transcode(path, encoding, workdir) if encoding.lower() not in UTF8 else path
    if fmt in ("csv", "tsv"):
        separator = "\t" if fmt == "tsv" else ","
        _check_header(readable, path, separator)
        lf = pl.scan_csv(readable, separator=separator, infer_schema=False, empty_string_is_null=False,
                         raise_if_empty=True)
        return [Part(str(path), lf, 2, text=readable)]
    return [Part(str(path), pl.scan_ndjson(readable, infer_schema_length=None), 1, jsonl=readable)]


def explain_polars(path: str, err: Exception, fmt: str) -> CotgenError:
    """A polars read error as one line naming the file (and a hint where one helps)."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "utf-8" in msg.lower() or "utf8" in msg.lower():
        return CotgenError(f"{path}: not valid UTF-8 ({msg}); pass --encoding with the file's encoding, e.g. latin-1")
    if isinstance(err, pl.exceptions.NoDataError) or "empty" in msg.lower():
        return CotgenError(f"{path}: the file is empty")
    hint = "" if fmt in ("parquet", "hf") else " (a truncated line or an unclosed quote?)"
    return CotgenError(f"{path}: malformed {fmt.upper()}{hint}: {msg}")


def locate_bad_json_line(path: Path, shown: Path) -> None:
    """Raise the error naming the first malformed line: polars' own message names no line."""
    with contextlib.suppress(UnicodeDecodeError):
        for _ in json_objects(path, shown):
            pass


def _header_text(names: list[str]) -> str:
    """Header names for a message: unprintable ones escaped, the whole cut to a readable length."""
    text = ", ".join(n if n.isprintable() else repr(n) for n in names)
    return text if len(text) <= 200 else text[:200] + "..."


def _quoted_list(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _missing(shown: str, names: list[str], present: list[str]) -> CotgenError:
    """"missing columns 'title' and 'label' (the file has: ...)" with how to map them."""
    return CotgenError(f"{shown}: missing {'column' if len(names) == 1 else 'columns'} {_quoted_list(names)} "
                       f"(the file has: {_header_text(present)}); map columns with --map FIELD=COLUMN or [sources.columns]")


def resolve_columns(shown: str, columns: ColumnMap, present: list[str], *,
                    detect_optional: bool) -> tuple[ColumnMap, dict[str, str]]:
    """The column mapping to use and the fields it detected (field -> header).

    Fields the config or `--map` set always win. Unset required fields (query, title, label) are matched
    against KNOWN_COLUMNS; optional ones (id, description) too when nothing was mapped at all. Two
    candidates for one field, or none for a required one, is an error listing them.
    """
    explicit = columns.model_fields_set
    values = columns.model_dump()
    detected: dict[str, str] = {}
    missing_fields: list[str] = []
    for fld, names in KNOWN_COLUMNS.items():
        if fld in explicit or (fld not in REQUIRED and not detect_optional):
            continue
        candidates = [h for h in present if h.lower() in names]
        if len(candidates) > 1:
            raise CotgenError(f"{shown}: columns {_quoted_list(candidates)} could each be the {fld}; "
                              f"pick one with --map {fld}=COLUMN")
        if candidates:
            values[fld], detected[fld] = candidates[0], candidates[0]
        elif fld in REQUIRED:
            missing_fields.append(fld)
    if missing_fields:
        raise _missing(shown, missing_fields, present)
    resolved = ColumnMap.model_validate(values)
    wanted = [resolved.query, resolved.title, resolved.label, resolved.description, resolved.id, *resolved.attributes]
    absent = [c for c in wanted if c and c not in present]
    if absent:
        raise _missing(shown, absent, present)
    return resolved, detected
