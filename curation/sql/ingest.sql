-- Ingest: the staged Parquet file (cleaned by polars) is validated, mapped to grades, hashed and inserted.
-- The per-ingest values (source, staging file, scheme facts for error messages) are one struct variable,
-- `ingest`, set by `bind`: views cannot take parameters, and a variable keeps every statement static.

-- name: create_label_map
CREATE OR REPLACE TEMP TABLE label_map (raw VARCHAR, grade VARCHAR)

-- name: insert_label_map
INSERT INTO label_map VALUES (?, ?)

-- name: create_label_bins
CREATE OR REPLACE TEMP TABLE label_bins (low DOUBLE, high DOUBLE, grade VARCHAR, is_last BOOLEAN)

-- name: insert_label_bin
INSERT INTO label_bins VALUES (?, ?, ?, ?)

-- name: bind
SET VARIABLE ingest = {'source': $source, 'staging': $staging, 'scheme': $scheme, 'binned': $binned,
                       'range': $range, 'expected': $expected, 'shown': $shown}

-- name: bind_integers
-- Whether the scheme's raw values are all integers (CrowdFlower's 1-4): then 4.0 reads as 4.
SET VARIABLE label_integers = $integers

-- name: raw_values
-- Every distinct raw label of the staged file, once: the mapping runs on these few values, not on every row.
CREATE OR REPLACE TEMP TABLE raw_values AS
SELECT DISTINCT raw_label FROM read_parquet(getvariable('ingest').staging)

-- name: raw_grades_view
-- A raw label matches the scheme's spellings as text; where every raw value of the scheme is an integer,
-- a number with no fractional part (4.0 from a pandas float column) matches as that integer; a binned
-- scheme maps numbers by range (the top bin includes its upper edge).
CREATE OR REPLACE TEMP VIEW raw_grades AS
WITH r AS (
    SELECT raw_label, TRY_CAST(raw_label AS DOUBLE) AS num FROM raw_values
)
SELECT r.raw_label, coalesce(m.grade, b.grade) AS grade
FROM r
LEFT JOIN label_map m ON m.raw = CASE WHEN getvariable('label_integers') AND r.num = round(r.num)
                                      THEN CAST(CAST(r.num AS BIGINT) AS VARCHAR) ELSE lower(r.raw_label) END
LEFT JOIN label_bins b ON r.num >= b.low AND (r.num < b.high OR (b.is_last AND r.num = b.high))

-- name: unmatched_labels
-- How many distinct raw labels the current label tables leave unmapped (to find a scheme that fits).
SELECT count(*) FILTER (WHERE grade IS NULL), count(*) FROM raw_grades WHERE raw_label <> ''

-- name: raw_label_values
SELECT raw_label FROM raw_values WHERE raw_label <> '' ORDER BY raw_label LIMIT $limit

-- name: staged_view
CREATE OR REPLACE TEMP VIEW staged AS
SELECT s.*, g.grade AS label,
       CASE WHEN s.query IS NULL THEN 'query' WHEN s.title IS NULL THEN 'title'
            WHEN g.grade IS NULL THEN 'label' END AS bad_field,
       substr(md5(getvariable('ingest').source || chr(31) || s._key), 1, 16) AS pair_id,
       substr(md5(s._nq), 1, 16) AS query_id
FROM read_parquet(getvariable('ingest').staging) s
LEFT JOIN raw_grades g ON g.raw_label = s.raw_label

-- name: keys
-- The narrow per-row facts every later step needs, computed once.
CREATE OR REPLACE TEMP TABLE keys AS SELECT _row, pair_id, label, raw_label, bad_field, _nul FROM staged

-- name: bad_rows_view
CREATE OR REPLACE TEMP VIEW bad_rows AS
SELECT _row, bad_field,
    CASE WHEN bad_field <> 'label' OR raw_label = '' THEN 'missing value'
         WHEN getvariable('ingest').binned AND TRY_CAST(raw_label AS DOUBLE) IS NULL
             THEN 'not a number: ''' || raw_label || ''''
         WHEN getvariable('ingest').binned
             THEN raw_label || ' is outside the scheme''s range ' || getvariable('ingest').range
         ELSE 'unknown label ''' || raw_label || ''' for scheme ' || getvariable('ingest').scheme
              || ' (expected one of: ' || getvariable('ingest').expected || ')'
    END AS reason, query, title, raw_label, _file, _file_row
FROM staged WHERE _row IN (SELECT _row FROM keys WHERE bad_field IS NOT NULL)

-- name: count
SELECT count(*), count(*) FILTER (WHERE bad_field IS NOT NULL), coalesce(sum(_nul), 0) FROM keys

-- name: first_bad
SELECT coalesce(_file, getvariable('ingest').shown) AS part, _file_row, bad_field, reason FROM bad_rows
ORDER BY _row LIMIT 1

-- name: csv_safe
-- A spreadsheet runs a cell that starts with = + - @ (or a tab or CR) as a formula: such cells get a leading quote.
CREATE OR REPLACE TEMP MACRO csv_safe(v) AS CASE WHEN regexp_matches(v, '^[=+\-@\t\r]') THEN '''' || v ELSE v END

-- name: write_rejects
COPY (SELECT _row AS row, bad_field AS field, csv_safe(reason) AS reason, csv_safe(query) AS query,
             csv_safe(title) AS title, csv_safe(raw_label) AS raw_label
      FROM bad_rows ORDER BY _row)
TO $path (HEADER, DELIMITER ',')

-- name: firsts
-- One row per pair: the first occurrence in the file wins. Only keys are aggregated, so memory grows
-- with the number of pairs, not with the size of their text.
CREATE OR REPLACE TEMP TABLE firsts AS
SELECT pair_id, min(_row) AS first_row, count(*) AS n_rows
FROM keys WHERE bad_field IS NULL GROUP BY pair_id

-- name: insert_pairs
-- `attributes` is a struct of the mapped attribute columns (NULL when none are mapped).
INSERT INTO pairs (pair_id, source, query_id, query, title, description, attributes, raw_label, label, scheme,
                   ingest_id, source_row)
SELECT s.pair_id, $source, s.query_id, s.query, s.title, s.description, to_json(s.attributes), s.raw_label,
       s.label, $scheme, $ingest_id, s._row
FROM staged s SEMI JOIN firsts f ON f.first_row = s._row
ANTI JOIN pairs p ON p.pair_id = s.pair_id

-- name: disagreements
-- A pair is in disagreement when this file, or this file and the store, give it more than one label.
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

-- name: summary
SELECT (SELECT coalesce(sum(n_rows - 1), 0) FROM firsts) AS duplicates,
       (SELECT count(*) FROM firsts f SEMI JOIN pairs p ON p.pair_id = f.pair_id) AS present_before

-- name: label_counts
SELECT label, count(*) FROM pairs WHERE ingest_id = $ingest_id GROUP BY label

-- name: conflicts
SELECT count(DISTINCT pair_id) FROM label_disagreements WHERE ingest_id = $ingest_id

-- name: record_ingest
INSERT INTO ingests (ingest_id, source, path, file_sha256, scheme, rows_read, added, already_present, duplicates,
                     conflicts, rejected, columns, nul_bytes_removed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: cleanup
DROP VIEW IF EXISTS bad_rows; DROP VIEW IF EXISTS staged; DROP TABLE IF EXISTS keys; DROP TABLE IF EXISTS firsts;
DROP VIEW IF EXISTS raw_grades; DROP TABLE IF EXISTS raw_values; RESET VARIABLE ingest;
RESET VARIABLE label_integers

-- name: same_file
-- An earlier ingest of a file with the same content under another source name.
SELECT source, path FROM ingests WHERE file_sha256 = $sha AND source <> $source ORDER BY created_at LIMIT 1

-- name: nested_json
-- The first JSON Lines record (1-based, blank lines skipped, as polars counts) whose mapped field holds an
-- object or an array: polars would silently turn it into its JSON text.
SELECT j.rn, f, json_type(j.json, '$."' || replace(f, '"', '\"') || '"') AS kind
FROM (SELECT row_number() OVER () AS rn, json FROM read_json_objects($path, format = 'newline_delimited')) j,
     unnest($fields::VARCHAR[]) AS t(f)
WHERE json_type(j.json, '$."' || replace(f, '"', '\"') || '"') IN ('OBJECT', 'ARRAY')
ORDER BY j.rn LIMIT 1
