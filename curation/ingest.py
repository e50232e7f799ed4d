"""Ingest a file of labelled pairs: polars streams it to Parquet, DuckDB validates, maps and inserts.

No Python loop touches rows: polars reads (with a row index for error messages) and DuckDB does the
label mapping, hashing, de-duplication and the anti-join against pairs already in the store.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from curation.csv_check import locate_bad_row, not_text
from curation.outputs import SCRATCH, prepare_output, scratch_dir
from curation.queries import sql
from curation.readers import (
    UTF8,
    Part,
    content_sha256,
    detect_format,
    explain_polars,
    locate_bad_json_line,
    open_parts,
    resolve_columns,
    source_files,
)
from curation.store import Store
from schemas.config import ColumnMap, SourceConfig
from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES, LabelScheme

# Cleaning and normalisation run in polars (multi-threaded, streaming); DuckDB hashes the `_key` of
# normalised fields. Normalised = lower-case, trimmed, inner whitespace collapsed, so cosmetic
# differences between two files still give the same pair id.
_WHITESPACE_RUN = r"\s\s+|[\t\n\r\f\v]"
_NESTED = (pl.Struct, pl.List, pl.Array, pl.Object)


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
    columns: dict[str, str] = field(default_factory=dict)  # field -> the column it was read from
    detected: dict[str, str] = field(default_factory=dict)  # the fields whose column was detected from headers
    nul_bytes_removed: int = 0
    # Set when the same file content was already ingested under another source name (nothing was added).
    same_file_as: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def column_map(self) -> ColumnMap:
        """The mapping this ingest used (given and detected fields) as config, so a re-run reads the same."""
        values: dict[str, object] = dict(self.columns)
        if "attributes" in values:
            values["attributes"] = str(values["attributes"]).split("|")
        return ColumnMap.model_validate(values)


def parse_column_map(spec: str | None, base: ColumnMap) -> ColumnMap:
    """`query=search_term,title=product_title,attributes=color|size` over a base mapping."""
    if not spec:
        return base
    values = base.model_dump(include=base.model_fields_set)  # unset fields stay unset: they are detected
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, column = part.partition("=")
        key = key.strip()
        if not sep or key not in ColumnMap.model_fields:
            raise CotgenError(f"--map: '{part}' is not FIELD=COLUMN with FIELD one of {', '.join(ColumnMap.model_fields)}")
        values[key] = [c for c in column.split("|") if c] if key == "attributes" else column.strip()
    return ColumnMap.model_validate(values)


def _html_unescape(values: pl.Series) -> pl.Series:
    # Entity decoding has no vectorised equivalent; it runs only for sources with strip_html = true.
    return pl.Series([html.unescape(v) if v and "&" in v else v for v in values.to_list()], dtype=pl.String)


def _clean(column: str, strip_html: bool) -> pl.Expr:
    """The column as text without NUL bytes; with strip_html also without tags, entities and whitespace runs."""
    expr = pl.col(column).cast(pl.String).str.replace_all("\x00", "", literal=True)
    if strip_html:
        # Tag removal leaves runs like "\n\t\t\t Item specifics \n\t": one space each, not wasted prompt
        # tokens. The same pattern as the pair-id normalisation, so pair ids do not change.
        expr = (expr.str.replace_all(r"<[^>]*>", " ").map_batches(_html_unescape, return_dtype=pl.String)
                .str.replace_all(_WHITESPACE_RUN, " "))
    return expr.str.strip_chars()


def _nul_count(columns: list[str]) -> pl.Expr:
    """NUL bytes in a row's mapped text fields (removed by `_clean`, counted for the report)."""
    counts = [pl.col(c).cast(pl.String).str.count_matches("\x00", literal=True).fill_null(0) for c in columns]
    return pl.sum_horizontal(counts).cast(pl.Int64) if counts else pl.lit(0, dtype=pl.Int64)


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
    record_id = _clean(columns.id, False).fill_null("") if columns.id else pl.lit("")
    texts = [c for c in (columns.query, columns.title, columns.description, columns.label, columns.id) if c]
    return [
        pl.col("_row").cast(pl.Int64),
        pl.col("_file"),
        pl.col("_file_row").cast(pl.Int64),
        _nul_count(texts).alias("_nul"),
        pl.when(query == "").then(None).otherwise(query).alias("query"),
        pl.when(title == "").then(None).otherwise(title).alias("title"),
        description.alias("description"),
        _clean(columns.label, False).fill_null("").alias("raw_label"),
        _attributes(columns.attributes).alias("attributes"),
        _normalise(query).alias("_nq"),
        pl.concat_str([record_id, _normalise(query), _normalise(title), _normalise(description)],
                      separator="\x1f").alias("_key"),
    ]


@dataclass(frozen=True)
class Staged:
    """The cleaned Parquet file DuckDB reads, the column mapping used, and the fields that were detected."""

    path: Path
    columns: ColumnMap
    detected: dict[str, str]

    def used(self) -> dict[str, str]:
        """Field -> column for every mapped field (attributes joined by '|')."""
        mapped = self.columns.model_dump(exclude_none=True)
        order = ("query", "title", "description", "label", "id", "attributes")
        return {k: "|".join(mapped[k]) if k == "attributes" else mapped[k] for k in order if mapped.get(k)}


def _check_nested(part: Part, columns: ColumnMap, store: Store) -> None:
    """An object or list where text belongs is an error naming row and field (casting would hide it)."""
    fields = {"query": columns.query, "title": columns.title, "description": columns.description,
              "label": columns.label, "id": columns.id, **{f"attributes.{c}": c for c in columns.attributes}}
    fields = {k: v for k, v in fields.items() if v}
    if part.jsonl is not None:  # polars turns an object among strings into its JSON text: ask DuckDB
        hit = store.one(sql("ingest.nested_json"), {"path": str(part.jsonl), "fields": list(fields.values())})
        if hit:
            field_name = next(k for k, v in fields.items() if v == hit[1])
            raise CotgenError(f"{part.name}:{hit[0]}: {field_name}: {hit[2].lower()} value, expected text")
        return
    schema = part.frame.collect_schema()
    for name, column in fields.items():
        if isinstance(schema[column], _NESTED):
            rows = (part.frame.with_row_index("_r", offset=part.first_row).filter(pl.col(column).is_not_null())
                    .select("_r").head(1).collect())
            if rows.height:
                kind = "an object" if isinstance(schema[column], pl.Struct) else "a list"
                raise CotgenError(f"{part.name}:{rows.item()}: {name}: {kind} value, expected text")


def stage_to_parquet(source: SourceConfig, fmt: str, store: Store, workdir: Path) -> Staged:
    """Clean the mapped columns (as strings, with row numbers) of every part into one Parquet file for DuckDB."""
    staging = workdir / "staged.parquet"
    shown = source.path
    parts: list[Part] = []
    try:
        parts = open_parts(source.path, fmt, source.encoding, source.split, workdir)
        present: list[str] = []
        for part in parts:
            present += [c for c in part.frame.collect_schema().names() if c not in present]
        columns, detected = resolve_columns(shown, source.columns, present,
                                            detect_optional=not source.columns.model_fields_set)
        for part in parts:
            _check_nested(part, columns, store)
        frames = [p.frame.with_row_index("_file_row", offset=p.first_row)
                  .with_columns(pl.lit(p.name if len(parts) > 1 else None, dtype=pl.String).alias("_file"))
                  for p in parts]
        if len(parts) == 1:
            lf = frames[0].with_columns(pl.col("_file_row").alias("_row"))
        else:
            lf = pl.concat(frames, how="diagonal_relaxed").with_row_index("_row", offset=1)
        lf.select(_projection(columns, source.strip_html)).sink_parquet(staging)
    except CotgenError as e:
        raise _not_text(source, fmt) or e from None
    except (pl.exceptions.PolarsError, OSError) as e:
        if "No space left" in str(e):
            raise CotgenError(f"{workdir}: no space left on the device to stage {shown}") from None
        if (not_text_error := _not_text(source, fmt)) is not None:
            raise not_text_error from None
        for part in parts:
            if part.jsonl is not None:
                locate_bad_json_line(part.jsonl, Path(part.name))
            if part.text is not None:
                locate_bad_row(part.text, part.name, "\t" if fmt == "tsv" else ",")
        raise explain_polars(shown, e, fmt) from None
    return Staged(staging, columns, detected)


def _not_text(source: SourceConfig, fmt: str) -> CotgenError | None:
    """For a text source read as UTF-8 that failed: the error saying it is not such text at all, if it is not."""
    path = Path(source.path)
    if fmt not in ("csv", "tsv", "jsonl") or source.encoding.lower() not in UTF8 or not path.is_file():
        return None
    why = not_text(path)
    return CotgenError(f"{path}: {why}") if why else None


def _prepare_label_tables(store: Store, scheme: LabelScheme) -> None:
    con = store.con
    con.execute(sql("ingest.create_label_map"))
    con.executemany(sql("ingest.insert_label_map"), list(scheme.raw_lookup().items()))
    con.execute(sql("ingest.create_label_bins"))
    top = max((b.high for b in scheme.bins), default=0.0)
    if scheme.bins:
        con.executemany(sql("ingest.insert_label_bin"), [(b.low, b.high, b.grade, b.high == top) for b in scheme.bins])
    con.execute(sql("ingest.bind_integers"), {"integers": _integer_raw_values(scheme)})


def _integer_raw_values(scheme: LabelScheme) -> bool:
    """True when the scheme's raw values are integers (CrowdFlower's 1-4): then 4.0 reads as 4."""
    if not scheme.mapping:
        return False
    try:
        return all(float(k) == int(k) for k in scheme.mapping)
    except ValueError:
        return False


def _values_text(values: list[str]) -> str:
    """'1-4' for a run of integers, else the first few values."""
    try:
        ints = sorted(int(v) for v in values)
    except ValueError:
        ints = []
    if len(ints) > 2 and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{ints[0]}-{ints[-1]}"
    return ", ".join(values[:6]) + (", ..." if len(values) > 6 else "")


def _scheme_hint(store: Store, scheme: LabelScheme, schemes: Mapping[str, LabelScheme]) -> str:
    """'; the values 1-4 fit scheme crowdflower: --scheme crowdflower' when another scheme maps every raw label."""
    fits = []
    for other in schemes.values():
        if other.name == scheme.name:
            continue
        _prepare_label_tables(store, other)
        unmatched, total = store.one(sql("ingest.unmatched_labels"))
        if total and not unmatched:
            fits.append(other.name)
    if not fits:
        return ""
    values = _values_text([v for (v,) in store.rows(sql("ingest.raw_label_values"), {"limit": 7})])
    return (f"; the values {values} fit scheme {' or '.join(fits)}: --scheme {fits[0]}")


def ingest(store: Store, source: SourceConfig, scheme: LabelScheme, *, skip_bad: bool = False,
           rejects_dir: Path | None = None, as_new_source: bool = False,
           schemes: Mapping[str, LabelScheme] | None = None) -> IngestReport:
    """Validate and add one source file's pairs; all or nothing unless skip_bad sends bad rows aside.

    A file whose content was ingested before under another source name adds nothing (its pairs would all
    come back under new ids) unless `as_new_source`; the report names that source.
    """
    path = Path(source.path)
    fmt = detect_format(source.path, source.format)
    files = source_files(source.path)
    ingest_id = uuid.uuid4().hex[:12]
    sha = content_sha256(files, source.split)
    earlier = None if as_new_source else store.one(sql("ingest.same_file"), {"sha": sha, "source": source.name})
    if earlier is not None:
        return IngestReport(ingest_id=ingest_id, source=source.name, path=str(path), scheme=scheme.name, rows_read=0,
                            added=0, already_present=0, duplicates=0, conflicts=0, rejected=0,
                            labels={g: 0 for g in scheme.ids}, same_file_as=earlier[0])
    con = store.con
    ranges = [b.low for b in scheme.bins] + [b.high for b in scheme.bins]
    # Staged next to the store, in the workspace: a killed run's stage is removed by the next ingest.
    with scratch_dir(store.path.parent / SCRATCH, "ingest") as tmp:
        staged = stage_to_parquet(source, fmt, store, tmp)
        _prepare_label_tables(store, scheme)
        con.execute(sql("ingest.bind"), {
            "source": source.name, "staging": str(staged.path), "scheme": scheme.name, "binned": bool(scheme.bins),
            "range": f"[{min(ranges):g}, {max(ranges):g}]" if ranges else "",
            "expected": ", ".join(sorted(set(scheme.raw_lookup()))), "shown": str(path),
        })
        try:
            for statement in ("raw_values", "raw_grades_view", "staged_view", "keys", "bad_rows_view"):
                con.execute(sql(f"ingest.{statement}"))
            rows_read, n_bad, nul_bytes = store.one(sql("ingest.count"))
            if rows_read == 0:
                raise CotgenError(f"{path}: the file has a header but no rows")
            rejects_path = None
            if n_bad and not skip_bad:
                part, row, bad_field, reason = store.one(sql("ingest.first_bad"))
                hint = _scheme_hint(store, scheme, schemes or BUILTIN_SCHEMES) if bad_field == "label" else ""
                if n_bad == rows_read:
                    more = f" (all {rows_read:,} rows are bad)" if n_bad > 1 else ""
                else:
                    more = f" ({n_bad - 1} more bad rows; --skip-bad sends them to a rejects file)" if n_bad > 1 else ""
                raise CotgenError(f"{part}:{row}: {bad_field}: {reason}{hint}{more}")
            if n_bad:
                rejects_path = (rejects_dir or path.parent) / f"{source.name}-{ingest_id}.rejects.csv"
                prepare_output(rejects_path)
                con.execute(sql("ingest.csv_safe"))
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
                    labels={g: labels.get(g, 0) for g in scheme.ids}, columns=staged.used(),
                    detected=staged.detected, nul_bytes_removed=nul_bytes,
                )
                con.execute(sql("ingest.record_ingest"), [
                    ingest_id, source.name, str(path.resolve()), sha, scheme.name, rows_read, report.added,
                    present_before, duplicates, conflicts, n_bad, json.dumps(report.columns), nul_bytes,
                ])
        finally:
            con.execute(sql("ingest.cleanup"))
    return report
