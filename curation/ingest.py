"""Ingest a file of labelled pairs: polars streams it to Parquet, DuckDB validates, maps and inserts.

No Python loop touches rows: polars reads (with a row index for error messages) and DuckDB does the
label mapping, hashing, de-duplication and the anti-join against pairs already in the store.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import html
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from curation.jsonl import json_objects
from curation.queries import sql
from curation.store import Store
from schemas.config import ColumnMap, SourceConfig
from schemas.errors import CotgenError, require_file
from schemas.labels import LabelScheme

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_UTF8 = {"utf-8", "utf8", "utf-8-sig"}

# Cleaning and normalisation run in polars (multi-threaded, streaming); DuckDB hashes the `_key` of
# normalised fields. Normalised = lower-case, trimmed, inner whitespace collapsed, so cosmetic
# differences between two files still give the same pair id.
_WHITESPACE_RUN = r"\s\s+|[\t\n\r\f\v]"

@dataclass
class IngestReport:
    ingest_id: str
    source: str
    path: str
    scheme: str
    rows_read: int
    added: int
    already_present: int
    duplicates: int
    conflicts: int
    rejected: int
    rejects_path: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    # Set when the same file content was already ingested under another source name (nothing was added).
    same_file_as: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def parse_column_map(spec: str | None, base: ColumnMap) -> ColumnMap:
    """`query=search_term,title=product_title,attributes=color|size` over a base mapping."""
    if not spec:
        return base
    values = base.model_dump()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, column = part.partition("=")
        key = key.strip()
        if not sep or key not in values:
            raise CotgenError(f"--map: '{part}' is not FIELD=COLUMN with FIELD one of {', '.join(values)}")
        values[key] = [c for c in column.split("|") if c] if key == "attributes" else column.strip()
    return ColumnMap.model_validate(values)


def detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CotgenError(f"{path}: cannot tell the format from '{path.suffix}'; pass --format csv|tsv|parquet|jsonl")
    return fmt


def _transcode(path: Path, encoding: str, workdir: Path) -> Path:
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
        except UnicodeDecodeError as e:
            raise CotgenError(f"{path}: not valid {encoding}: {e.reason} near byte {e.start}") from None
    return target


def _scan(path: Path, fmt: str) -> tuple[pl.LazyFrame, int]:
    """A lazy frame of strings and the row number of its first data record (CSV counts its header)."""
    if fmt in ("csv", "tsv"):
        lf = pl.scan_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema=False,
                         empty_string_is_null=False, raise_if_empty=True)
        return lf, 2
    if fmt == "parquet":
        return pl.scan_parquet(path), 1
    return pl.scan_ndjson(path, infer_schema_length=None), 1


def _explain_polars(path: Path, err: Exception, fmt: str) -> CotgenError:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "utf-8" in msg.lower() or "utf8" in msg.lower():
        return CotgenError(f"{path}: not valid UTF-8 ({msg}); pass --encoding with the file's encoding, e.g. latin-1")
    if isinstance(err, pl.exceptions.NoDataError) or "empty" in msg.lower():
        return CotgenError(f"{path}: the file is empty")
    hint = "" if fmt == "parquet" else " (a truncated line or an unclosed quote?)"
    return CotgenError(f"{path}: malformed {fmt.upper()}{hint}: {msg}")


def _html_unescape(values: pl.Series) -> pl.Series:
    # Entity decoding has no vectorised equivalent; it runs only for sources with strip_html = true.
    return pl.Series([html.unescape(v) if v and "&" in v else v for v in values.to_list()], dtype=pl.String)


def _clean(column: str, strip_html: bool) -> pl.Expr:
    expr = pl.col(column).cast(pl.String)
    if strip_html:
        expr = expr.str.replace_all(r"<[^>]*>", " ").map_batches(_html_unescape, return_dtype=pl.String)
    return expr.str.strip_chars()


def _normalise(expr: pl.Expr) -> pl.Expr:
    # Matching only whitespace runs (and tabs, newlines) leaves most values untouched: far cheaper than
    # rewriting every single space with a `\s+` pattern, with the same result.
    return expr.fill_null("").str.to_lowercase().str.replace_all(_WHITESPACE_RUN, " ")


def _attributes(names: list[str]) -> pl.Expr:
    """One struct column of the mapped attribute columns as strings (DuckDB stores it as a JSON object)."""
    if not names:
        return pl.lit(None, dtype=pl.String)
    return pl.struct(*(pl.col(c).cast(pl.String) for c in names))


def _projection(columns: ColumnMap, strip_html: bool) -> list[pl.Expr]:
    """Canonical columns: cleaned text (empty query/title -> null), raw label, attributes, hash inputs."""
    query = _clean(columns.query, strip_html)
    title = _clean(columns.title, strip_html)
    description = _clean(columns.description, strip_html).fill_null("") if columns.description else pl.lit("")
    record_id = pl.col(columns.id).cast(pl.String).str.strip_chars().fill_null("") if columns.id else pl.lit("")
    return [
        pl.col("_row").cast(pl.Int64),
        pl.when(query == "").then(None).otherwise(query).alias("query"),
        pl.when(title == "").then(None).otherwise(title).alias("title"),
        description.alias("description"),
        pl.col(columns.label).cast(pl.String).str.strip_chars().fill_null("").alias("raw_label"),
        _attributes(columns.attributes).alias("attributes"),
        _normalise(query).alias("_nq"),
        pl.concat_str([record_id, _normalise(query), _normalise(title), _normalise(description)],
                      separator="\x1f").alias("_key"),
    ]


def stage_to_parquet(path: Path, fmt: str, columns: ColumnMap, encoding: str, strip_html: bool, workdir: Path) -> Path:
    """Clean the mapped columns (as strings, with a row number) into a Parquet file for DuckDB."""
    needs_transcode = fmt != "parquet" and encoding.lower() not in _UTF8
    path_to_read = _transcode(path, encoding, workdir) if needs_transcode else path
    staging = workdir / "staged.parquet"
    try:
        lf, first_row = _scan(path_to_read, fmt)
        present = lf.collect_schema().names()
        wanted = [columns.query, columns.title, columns.label, columns.description, columns.id, *columns.attributes]
        missing = [c for c in wanted if c and c not in present]
        if missing:
            raise CotgenError(
                f"{path}: missing column {', '.join(repr(c) for c in missing)} (the file has: {', '.join(present)}); "
                "map columns with --map FIELD=COLUMN or [sources.columns]"
            )
        lf.with_row_index("_row", offset=first_row).select(_projection(columns, strip_html)).sink_parquet(staging)
    except CotgenError:
        raise
    except (pl.exceptions.PolarsError, OSError) as e:
        if fmt == "jsonl":
            _locate_bad_json_line(path_to_read, path)
        raise _explain_polars(path, e, fmt) from None
    return staging


def _locate_bad_json_line(path: Path, shown: Path) -> None:
    """Raise the error naming the first malformed line: polars' own message names no line."""
    with contextlib.suppress(UnicodeDecodeError):
        for _ in json_objects(path, shown):
            pass


def _prepare_label_tables(store: Store, scheme: LabelScheme) -> None:
    con = store.con
    con.execute(sql("ingest.create_label_map"))
    con.executemany(sql("ingest.insert_label_map"), list(scheme.raw_lookup().items()))
    con.execute(sql("ingest.create_label_bins"))
    top = max((b.high for b in scheme.bins), default=0.0)
    if scheme.bins:
        con.executemany(sql("ingest.insert_label_bin"), [(b.low, b.high, b.grade, b.high == top) for b in scheme.bins])


def _integer_raw_values(scheme: LabelScheme) -> bool:
    """True when the scheme's raw values are integers (CrowdFlower's 1-4): then 4.0 reads as 4."""
    if not scheme.mapping:
        return False
    try:
        return all(float(k) == int(k) for k in scheme.mapping)
    except ValueError:
        return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def ingest(store: Store, source: SourceConfig, scheme: LabelScheme, *, skip_bad: bool = False,
           rejects_dir: Path | None = None, as_new_source: bool = False) -> IngestReport:
    """Validate and add one source file's pairs; all or nothing unless skip_bad sends bad rows aside.

    A file whose content was ingested before under another source name adds nothing (its pairs would all
    come back under new ids) unless `as_new_source`; the report names that source.
    """
    path = Path(source.path)
    require_file(path)
    if path.stat().st_size == 0:
        raise CotgenError(f"{path}: the file is empty")
    fmt = detect_format(path, source.format)
    ingest_id = uuid.uuid4().hex[:12]
    sha = file_sha256(path)
    earlier = None if as_new_source else store.one(sql("ingest.same_file"), {"sha": sha, "source": source.name})
    if earlier is not None:
        return IngestReport(ingest_id=ingest_id, source=source.name, path=str(path), scheme=scheme.name, rows_read=0,
                            added=0, already_present=0, duplicates=0, conflicts=0, rejected=0,
                            labels={g: 0 for g in scheme.ids}, same_file_as=earlier[0])
    con = store.con
    ranges = [b.low for b in scheme.bins] + [b.high for b in scheme.bins]
    with tempfile.TemporaryDirectory(prefix="cotgen-ingest-") as tmp:
        staging = stage_to_parquet(path, fmt, source.columns, source.encoding, source.strip_html, Path(tmp))
        _prepare_label_tables(store, scheme)
        con.execute(sql("ingest.bind"), {
            "source": source.name, "staging": str(staging), "scheme": scheme.name, "binned": bool(scheme.bins),
            "range": f"[{min(ranges):g}, {max(ranges):g}]" if ranges else "",
            "expected": ", ".join(sorted(set(scheme.raw_lookup()))), "integers": _integer_raw_values(scheme),
        })
        try:
            con.execute(sql("ingest.staged_view"))
            con.execute(sql("ingest.keys"))
            con.execute(sql("ingest.bad_rows_view"))
            rows_read, n_bad = store.one(sql("ingest.count"))
            if rows_read == 0:
                raise CotgenError(f"{path}: the file has a header but no rows")
            rejects_path = None
            if n_bad and not skip_bad:
                row, bad_field, reason, _ = store.one(sql("ingest.first_bad"))
                more = f" ({n_bad - 1} more bad rows; --skip-bad sends them to a rejects file)" if n_bad > 1 else ""
                raise CotgenError(f"{path}:{row}: {bad_field}: {reason}{more}")
            if n_bad:
                rejects_dir = rejects_dir or path.parent
                rejects_dir.mkdir(parents=True, exist_ok=True)
                rejects_path = rejects_dir / f"{source.name}-{ingest_id}.rejects.csv"
                con.execute(sql("ingest.write_rejects"), {"path": str(rejects_path)})
            ids = {"source": source.name, "ingest_id": ingest_id}
            with store.transaction():
                con.execute(sql("ingest.firsts"))
                duplicates, present_before = store.one(sql("ingest.summary"))
                con.execute(sql("ingest.disagreements"), ids)
                con.execute(sql("ingest.insert_pairs"), {**ids, "scheme": scheme.name})
                labels = dict(store.rows(sql("ingest.label_counts"), {"ingest_id": ingest_id}))
                conflicts = store.scalar(sql("ingest.conflicts"), {"ingest_id": ingest_id})
                report = IngestReport(
                    ingest_id=ingest_id, source=source.name, path=str(path), scheme=scheme.name, rows_read=rows_read,
                    added=sum(labels.values()), already_present=present_before, duplicates=duplicates,
                    conflicts=conflicts, rejected=n_bad, rejects_path=str(rejects_path) if rejects_path else None,
                    labels={g: labels.get(g, 0) for g in scheme.ids},
                )
                con.execute(sql("ingest.record_ingest"), [
                    ingest_id, source.name, str(path.resolve()), sha, scheme.name, rows_read, report.added,
                    present_before, duplicates, conflicts, n_bad,
                ])
        finally:
            con.execute(sql("ingest.cleanup"))
    return report
