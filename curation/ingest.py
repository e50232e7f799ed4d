"""Ingest a file of labelled pairs: polars streams it to Parquet, DuckDB validates, maps and inserts.

No Python loop touches rows: polars reads (with a row index for error messages) and DuckDB does the
label mapping, hashing, de-duplication and the anti-join against pairs already in the store.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from curation.store import Store
from schemas.config import ColumnMap, SourceConfig
from schemas.errors import CotgenError
from schemas.labels import LabelScheme

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_UTF8 = {"utf-8", "utf8", "utf-8-sig"}

# Normalised text: lower-case, trimmed, inner whitespace collapsed. Pair ids hash it, so cosmetic
# differences (case, spacing) between two files still give the same pair.
_NORM = "regexp_replace(lower(trim({x})), '\\s+', ' ', 'g')"

STAGE_SQL = """
CREATE OR REPLACE TEMP TABLE staged AS
WITH raw AS (
    SELECT _row,
           nullif(trim({query}), '') AS query,
           nullif(trim({title}), '') AS title,
           coalesce(trim({description}), '') AS description,
           {attributes} AS attributes,
           coalesce(trim(label_raw), '') AS raw_label,
           {record_id} AS record_id
    FROM read_parquet($staging)
), mapped AS (
    SELECT raw.*, coalesce(m.grade, b.grade) AS label, TRY_CAST(raw.raw_label AS DOUBLE) AS num
    FROM raw
    LEFT JOIN label_map m ON lower(raw.raw_label) = m.raw
    LEFT JOIN label_bins b ON TRY_CAST(raw.raw_label AS DOUBLE) >= b.low
        AND (TRY_CAST(raw.raw_label AS DOUBLE) < b.high OR (b.is_last AND TRY_CAST(raw.raw_label AS DOUBLE) = b.high))
)
SELECT *,
    CASE WHEN query IS NULL THEN 'query' WHEN title IS NULL THEN 'title'
         WHEN label IS NULL THEN 'label' END AS bad_field,
    CASE WHEN query IS NULL OR title IS NULL OR raw_label = '' THEN 'missing value'
         WHEN label IS NOT NULL THEN NULL
         WHEN $binned AND num IS NULL THEN 'not a number: ''' || raw_label || ''''
         WHEN $binned THEN raw_label || ' is outside the scheme''s range ' || $range
         ELSE 'unknown label ''' || raw_label || ''' for scheme ' || $scheme || ' (expected one of: ' || $expected || ')'
    END AS reason,
    substr(md5($source || chr(31) || record_id || chr(31) || {nq} || chr(31) || {nt} || chr(31) || {nd}), 1, 16) AS pair_id,
    substr(md5({nq}), 1, 16) AS query_id
FROM mapped
"""

FIRST_BAD_SQL = "SELECT _row, bad_field, reason FROM staged WHERE bad_field IS NOT NULL ORDER BY _row LIMIT 1"
COUNT_SQL = "SELECT count(*), count(*) FILTER (WHERE bad_field IS NOT NULL) FROM staged"
REJECTS_SQL = """
COPY (SELECT _row AS row, bad_field AS field, reason, query, title, raw_label
      FROM staged WHERE bad_field IS NOT NULL ORDER BY _row) TO '{path}' (HEADER, DELIMITER ',')
"""

# One row per pair: the first occurrence in the file wins; labels seen for it are counted.
CANDIDATES_SQL = """
CREATE OR REPLACE TEMP TABLE candidates AS
SELECT pair_id, arg_min(query_id, _row) AS query_id, arg_min(query, _row) AS query, arg_min(title, _row) AS title,
       arg_min(description, _row) AS description, arg_min(attributes, _row) AS attributes,
       arg_min(raw_label, _row) AS raw_label, arg_min(label, _row) AS label, min(_row) AS source_row,
       count(*) AS n_rows, count(DISTINCT label) AS n_labels
FROM staged WHERE bad_field IS NULL GROUP BY pair_id
"""

INSERT_PAIRS_SQL = """
INSERT INTO pairs (pair_id, source, query_id, query, title, description, attributes, raw_label, label, scheme,
                   ingest_id, source_row)
SELECT c.pair_id, $source, c.query_id, c.query, c.title, c.description, c.attributes, c.raw_label, c.label,
       $scheme, $ingest_id, c.source_row
FROM candidates c ANTI JOIN pairs p ON p.pair_id = c.pair_id
"""

# A pair is in disagreement when this file, or this file and the store, give it more than one label.
DISAGREEMENTS_SQL = """
INSERT INTO label_disagreements (pair_id, source, label, raw_label, n_rows, ingest_id)
WITH seen AS (
    SELECT pair_id, label, arg_min(raw_label, _row) AS raw_label, count(*) AS n_rows
    FROM staged WHERE bad_field IS NULL GROUP BY pair_id, label
    UNION ALL
    SELECT p.pair_id, p.label, p.raw_label, 0 FROM pairs p SEMI JOIN candidates c ON c.pair_id = p.pair_id
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
SELECT (SELECT coalesce(sum(n_rows - 1), 0) FROM candidates) AS duplicates,
       (SELECT count(*) FROM candidates c SEMI JOIN pairs p ON p.pair_id = c.pair_id) AS present_before
"""

LABEL_COUNTS_SQL = "SELECT label, count(*) FROM pairs WHERE ingest_id = $ingest_id GROUP BY label"
CONFLICTS_SQL = "SELECT count(DISTINCT pair_id) FROM label_disagreements WHERE ingest_id = $ingest_id"


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
    return CotgenError(f"{path}: malformed {fmt.upper()} (a truncated line or an unclosed quote?): {msg}")


def stage_to_parquet(path: Path, fmt: str, columns: ColumnMap, encoding: str, workdir: Path) -> Path:
    """Project the mapped columns (as strings, with a row number) into a Parquet file for DuckDB."""
    if fmt not in ("parquet",) and encoding.lower() not in _UTF8:
        path_to_read = _transcode(path, encoding, workdir)
    else:
        path_to_read = path
    staging = workdir / "staged.parquet"
    try:
        lf, first_row = _scan(path_to_read, fmt)
        present = lf.collect_schema().names()
        wanted = {"query": columns.query, "title": columns.title, "label_raw": columns.label}
        if columns.description:
            wanted["description"] = columns.description
        if columns.id:
            wanted["record_id"] = columns.id
        wanted.update({f"attr__{c}": c for c in columns.attributes})
        missing = [c for c in wanted.values() if c not in present]
        if missing:
            raise CotgenError(
                f"{path}: missing column {', '.join(repr(c) for c in missing)} (the file has: {', '.join(present)}); "
                "map columns with --map FIELD=COLUMN or [sources.columns]"
            )
        lf = lf.with_row_index("_row", offset=first_row).select(
            pl.col("_row").cast(pl.Int64), *(pl.col(src).cast(pl.String).alias(dst) for dst, src in wanted.items())
        )
        lf.sink_parquet(staging)
    except CotgenError:
        raise
    except (pl.exceptions.PolarsError, OSError) as e:
        raise _explain_polars(path, e, fmt) from None
    return staging


def _html_unescape(values: pa.Array) -> pa.Array:
    # Entity decoding has no SQL equivalent; it runs only for sources with strip_html = true.
    return pa.array([html.unescape(v) if v and "&" in v else v for v in values.to_pylist()], type=pa.string())


def _text_expr(column: str, strip_html: bool) -> str:
    if not strip_html:
        return column
    return f"cotgen_html_unescape(regexp_replace(regexp_replace({column}, '<[^>]*>', ' ', 'g'), '\\s+', ' ', 'g'))"


def _prepare_label_tables(store: Store, scheme: LabelScheme) -> None:
    con = store.con
    con.execute("CREATE OR REPLACE TEMP TABLE label_map (raw VARCHAR, grade VARCHAR)")
    con.executemany("INSERT INTO label_map VALUES (?, ?)", list(scheme.raw_lookup().items()))
    con.execute("CREATE OR REPLACE TEMP TABLE label_bins (low DOUBLE, high DOUBLE, grade VARCHAR, is_last BOOLEAN)")
    top = max((b.high for b in scheme.bins), default=0.0)
    if scheme.bins:
        con.executemany("INSERT INTO label_bins VALUES (?, ?, ?, ?)",
                        [(b.low, b.high, b.grade, b.high == top) for b in scheme.bins])


def _stage_sql(columns: ColumnMap, strip_html: bool) -> str:
    description = "description" if columns.description else "NULL"
    if columns.attributes:
        attrs = "json_object(" + ", ".join(f"'{c}', \"attr__{c}\"" for c in columns.attributes) + ")"
    else:
        attrs = "NULL::JSON"
    return STAGE_SQL.format(
        query=_text_expr("query", strip_html), title=_text_expr("title", strip_html),
        description=_text_expr(description, strip_html), attributes=attrs,
        record_id="coalesce(trim(record_id), '')" if columns.id else "''",
        nq=_NORM.format(x="query"), nt=_NORM.format(x="title"), nd=_NORM.format(x="description"),
    )


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
    if not path.is_file():
        raise CotgenError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CotgenError(f"{path}: the file is empty")
    fmt = detect_format(path, source.format)
    ingest_id = uuid.uuid4().hex[:12]
    con = store.con
    if source.strip_html and not store.scalar(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'cotgen_html_unescape'"
    ):
        con.create_function("cotgen_html_unescape", _html_unescape, ["VARCHAR"], "VARCHAR", type="arrow")
    with tempfile.TemporaryDirectory(prefix="cotgen-ingest-") as tmp:
        staging = stage_to_parquet(path, fmt, source.columns, source.encoding, Path(tmp))
        _prepare_label_tables(store, scheme)
        ranges = [b.low for b in scheme.bins] + [b.high for b in scheme.bins]
        params = {
            "staging": str(staging), "source": source.name, "scheme": scheme.name, "binned": bool(scheme.bins),
            "range": f"[{min(ranges):g}, {max(ranges):g}]" if ranges else "",
            "expected": ", ".join(sorted(set(scheme.raw_lookup()))),
        }
        con.execute(_stage_sql(source.columns, source.strip_html), params)
    rows_read, n_bad = store.one(COUNT_SQL)
    if rows_read == 0:
        raise CotgenError(f"{path}: the file has a header but no rows")
    rejects_path = None
    if n_bad and not skip_bad:
        row, bad_field, reason = store.one(FIRST_BAD_SQL)
        more = f" ({n_bad - 1} more bad rows; --skip-bad sends them to a rejects file)" if n_bad > 1 else ""
        raise CotgenError(f"{path}:{row}: {bad_field}: {reason}{more}")
    if n_bad:
        rejects_dir = rejects_dir or path.parent
        rejects_dir.mkdir(parents=True, exist_ok=True)
        rejects_path = rejects_dir / f"{source.name}-{ingest_id}.rejects.csv"
        con.execute(REJECTS_SQL.format(path=str(rejects_path).replace("'", "''")))
    sha = file_sha256(path)
    with store.transaction():
        con.execute(CANDIDATES_SQL)
        duplicates, present_before = store.one(SUMMARY_SQL)
        con.execute(DISAGREEMENTS_SQL, {"source": source.name, "ingest_id": ingest_id})
        con.execute(INSERT_PAIRS_SQL, {"source": source.name, "scheme": scheme.name, "ingest_id": ingest_id})
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
    con.execute("DROP TABLE IF EXISTS staged; DROP TABLE IF EXISTS candidates")
    return report
