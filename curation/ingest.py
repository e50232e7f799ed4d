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

STAGED_VIEW_SQL = """
CREATE OR REPLACE TEMP VIEW staged AS
SELECT s.*, coalesce(m.grade, b.grade) AS label,
       CASE WHEN s.query IS NULL THEN 'query' WHEN s.title IS NULL THEN 'title'
            WHEN coalesce(m.grade, b.grade) IS NULL THEN 'label' END AS bad_field,
       substr(md5({source} || chr(31) || s._key), 1, 16) AS pair_id,
       substr(md5(s._nq), 1, 16) AS query_id
FROM read_parquet({staging}) s
LEFT JOIN label_map m ON lower(s.raw_label) = m.raw
LEFT JOIN label_bins b ON TRY_CAST(s.raw_label AS DOUBLE) >= b.low
    AND (TRY_CAST(s.raw_label AS DOUBLE) < b.high OR (b.is_last AND TRY_CAST(s.raw_label AS DOUBLE) = b.high))
"""

# The narrow per-row facts every later step needs, computed once.
KEYS_SQL = "CREATE OR REPLACE TEMP TABLE keys AS SELECT _row, pair_id, label, raw_label, bad_field FROM staged"

BAD_ROWS_SQL = """
SELECT _row, bad_field,
    CASE WHEN bad_field <> 'label' OR raw_label = '' THEN 'missing value'
         WHEN $binned AND TRY_CAST(raw_label AS DOUBLE) IS NULL THEN 'not a number: ''' || raw_label || ''''
         WHEN $binned THEN raw_label || ' is outside the scheme''s range ' || $range
         ELSE 'unknown label ''' || raw_label || ''' for scheme ' || $scheme || ' (expected one of: ' || $expected || ')'
    END AS reason, query, title, raw_label
FROM staged WHERE _row IN (SELECT _row FROM keys WHERE bad_field IS NOT NULL)
"""

COUNT_SQL = "SELECT count(*), count(*) FILTER (WHERE bad_field IS NOT NULL) FROM keys"
FIRST_BAD_SQL = f"SELECT _row, bad_field, reason FROM ({BAD_ROWS_SQL}) ORDER BY _row LIMIT 1"
REJECTS_SQL = (f"COPY (SELECT _row AS row, bad_field AS field, reason, query, title, raw_label FROM ({BAD_ROWS_SQL}) "
               "ORDER BY _row) TO {path} (HEADER, DELIMITER ',')")

# One row per pair: the first occurrence in the file wins. Only keys are aggregated, so memory grows
# with the number of pairs, not with the size of their text.
FIRSTS_SQL = """
CREATE OR REPLACE TEMP TABLE firsts AS
SELECT pair_id, min(_row) AS first_row, count(*) AS n_rows
FROM keys WHERE bad_field IS NULL GROUP BY pair_id
"""

INSERT_PAIRS_SQL = """
INSERT INTO pairs (pair_id, source, query_id, query, title, description, attributes, raw_label, label, scheme,
                   ingest_id, source_row)
SELECT s.pair_id, $source, s.query_id, s.query, s.title, s.description, {attributes}, s.raw_label, s.label,
       $scheme, $ingest_id, s._row
FROM staged s SEMI JOIN firsts f ON f.first_row = s._row
ANTI JOIN pairs p ON p.pair_id = s.pair_id
"""

# A pair is in disagreement when this file, or this file and the store, give it more than one label.
DISAGREEMENTS_SQL = """
INSERT INTO label_disagreements (pair_id, source, label, raw_label, n_rows, ingest_id)
WITH seen AS (
    SELECT pair_id, label, arg_min(raw_label, _row) AS raw_label, count(*) AS n_rows
    FROM keys WHERE bad_field IS NULL GROUP BY pair_id, label
    UNION ALL
    SELECT p.pair_id, p.label, p.raw_label, 0 FROM pairs p SEMI JOIN firsts f ON f.pair_id = p.pair_id
), conflicted AS (
    SELECT pair_id FROM seen GROUP BY pair_id HAVING count(DISTINCT label) > 1
)
SELECT s.pair_id, $source, s.label, any_value(s.raw_label), sum(s.n_rows), $ingest_id
FROM seen s SEMI JOIN conflicted k ON k.pair_id = s.pair_id
GROUP BY s.pair_id, s.label
HAVING NOT EXISTS (SELECT 1 FROM label_disagreements d
                   WHERE d.pair_id = s.pair_id AND d.label = s.label AND d.source = $source)
"""

SUMMARY_SQL = """
SELECT (SELECT coalesce(sum(n_rows - 1), 0) FROM firsts) AS duplicates,
       (SELECT count(*) FROM firsts f SEMI JOIN pairs p ON p.pair_id = f.pair_id) AS present_before
"""

LABEL_COUNTS_SQL = "SELECT label, count(*) FROM pairs WHERE ingest_id = $ingest_id GROUP BY label"
CONFLICTS_SQL = "SELECT count(DISTINCT pair_id) FROM label_disagreements WHERE ingest_id = $ingest_id"
CLEANUP_SQL = "DROP VIEW IF EXISTS staged; DROP TABLE IF EXISTS keys; DROP TABLE IF EXISTS firsts"


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


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
        *(pl.col(c).cast(pl.String).alias(f"attr__{c}") for c in columns.attributes),
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
    con.execute("CREATE OR REPLACE TEMP TABLE label_map (raw VARCHAR, grade VARCHAR)")
    con.executemany("INSERT INTO label_map VALUES (?, ?)", list(scheme.raw_lookup().items()))
    con.execute("CREATE OR REPLACE TEMP TABLE label_bins (low DOUBLE, high DOUBLE, grade VARCHAR, is_last BOOLEAN)")
    top = max((b.high for b in scheme.bins), default=0.0)
    if scheme.bins:
        con.executemany("INSERT INTO label_bins VALUES (?, ?, ?, ?)",
                        [(b.low, b.high, b.grade, b.high == top) for b in scheme.bins])


def _attributes_sql(columns: ColumnMap) -> str:
    if not columns.attributes:
        return "NULL::JSON"
    return "json_object(" + ", ".join(f"{_sql_literal(c)}, s.\"attr__{c}\"" for c in columns.attributes) + ")"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def ingest(store: Store, source: SourceConfig, scheme: LabelScheme, *, skip_bad: bool = False,
           rejects_dir: Path | None = None) -> IngestReport:
    """Validate and add one source file's pairs; all or nothing unless skip_bad sends bad rows aside."""
    path = Path(source.path)
    require_file(path)
    if path.stat().st_size == 0:
        raise CotgenError(f"{path}: the file is empty")
    fmt = detect_format(path, source.format)
    ingest_id = uuid.uuid4().hex[:12]
    con = store.con
    ranges = [b.low for b in scheme.bins] + [b.high for b in scheme.bins]
    reason_params = {
        "scheme": scheme.name, "binned": bool(scheme.bins),
        "range": f"[{min(ranges):g}, {max(ranges):g}]" if ranges else "",
        "expected": ", ".join(sorted(set(scheme.raw_lookup()))),
    }
    with tempfile.TemporaryDirectory(prefix="cotgen-ingest-") as tmp:
        staging = stage_to_parquet(path, fmt, source.columns, source.encoding, source.strip_html, Path(tmp))
        _prepare_label_tables(store, scheme)
        con.execute(STAGED_VIEW_SQL.format(source=_sql_literal(source.name), staging=_sql_literal(str(staging))))
        try:
            con.execute(KEYS_SQL)
            rows_read, n_bad = store.one(COUNT_SQL)
            if rows_read == 0:
                raise CotgenError(f"{path}: the file has a header but no rows")
            rejects_path = None
            if n_bad and not skip_bad:
                row, bad_field, reason = store.one(FIRST_BAD_SQL, reason_params)
                more = f" ({n_bad - 1} more bad rows; --skip-bad sends them to a rejects file)" if n_bad > 1 else ""
                raise CotgenError(f"{path}:{row}: {bad_field}: {reason}{more}")
            if n_bad:
                rejects_dir = rejects_dir or path.parent
                rejects_dir.mkdir(parents=True, exist_ok=True)
                rejects_path = rejects_dir / f"{source.name}-{ingest_id}.rejects.csv"
                con.execute(REJECTS_SQL.format(path=_sql_literal(str(rejects_path))), reason_params)
            sha = file_sha256(path)
            ids = {"source": source.name, "ingest_id": ingest_id}
            with store.transaction():
                con.execute(FIRSTS_SQL)
                duplicates, present_before = store.one(SUMMARY_SQL)
                con.execute(DISAGREEMENTS_SQL, ids)
                con.execute(INSERT_PAIRS_SQL.format(attributes=_attributes_sql(source.columns)),
                            {**ids, "scheme": scheme.name})
                labels = dict(store.rows(LABEL_COUNTS_SQL, {"ingest_id": ingest_id}))
                conflicts = store.scalar(CONFLICTS_SQL, {"ingest_id": ingest_id})
                report = IngestReport(
                    ingest_id=ingest_id, source=source.name, path=str(path), scheme=scheme.name, rows_read=rows_read,
                    added=sum(labels.values()), already_present=present_before, duplicates=duplicates,
                    conflicts=conflicts, rejected=n_bad, rejects_path=str(rejects_path) if rejects_path else None,
                    labels={g: labels.get(g, 0) for g in scheme.ids},
                )
                con.execute(
                    "INSERT INTO ingests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp)",
                    [ingest_id, source.name, str(path.resolve()), sha, scheme.name, rows_read, report.added,
                     present_before, duplicates, conflicts, n_bad],
                )
        finally:
            con.execute(CLEANUP_SQL)
    return report
