-- name: registered
SELECT version FROM dataset_versions WHERE name = $name;

-- name: register
INSERT INTO dataset_versions (name, version, content_hash, parent, path, manifest, created_at)
VALUES ($name, $version, $content_hash, $parent, $path, $manifest, $created_at);

-- name: digests
-- One digest per pair id of a version's kind: its rows (split included) hashed in a fixed order.
CREATE OR REPLACE TEMP TABLE {table} AS
SELECT pair_id, md5(string_agg(h, ',' ORDER BY h)) AS digest
FROM (SELECT pair_id, md5(CAST(to_json(t) AS VARCHAR)) AS h
      FROM (SELECT * EXCLUDE (filename), regexp_extract(filename, '([^/\\]+)\.parquet$', 1) AS split
            FROM read_parquet($files::VARCHAR[], filename = true, union_by_name = true)) AS t)
GROUP BY pair_id;

-- name: empty_digests
CREATE OR REPLACE TEMP TABLE {table} (pair_id VARCHAR, digest VARCHAR);

-- name: diff
-- Per pair id: added, removed, changed (any of its rows differ) or unchanged.
WITH changes AS (
    SELECT coalesce(a.pair_id, b.pair_id) AS pair_id,
           CASE WHEN a.pair_id IS NULL THEN 'added' WHEN b.pair_id IS NULL THEN 'removed'
                WHEN a.digest <> b.digest THEN 'changed' ELSE 'unchanged' END AS change
    FROM digests_a a FULL OUTER JOIN digests_b b ON a.pair_id = b.pair_id
)
SELECT change, count(*) AS pairs, list(pair_id ORDER BY pair_id)[1:$examples] AS examples
FROM changes GROUP BY change ORDER BY change;

-- name: cells
-- One digest per (pair id, column) of a version's kind, over the pair's rows in any order: tells which
-- columns of a changed pair changed.
CREATE OR REPLACE TEMP TABLE {table} AS
WITH t AS (
    SELECT pair_id, md5(CAST(to_json(COLUMNS(* EXCLUDE (pair_id))) AS VARCHAR))
    FROM (SELECT * EXCLUDE (filename), regexp_extract(filename, '([^/\\]+)\.parquet$', 1) AS split
          FROM read_parquet($files::VARCHAR[], filename = true, union_by_name = true))
), u AS (
    UNPIVOT t ON COLUMNS(* EXCLUDE (pair_id)) INTO NAME col VALUE h
)
SELECT pair_id, col, md5(string_agg(h, ',' ORDER BY h)) AS digest FROM u GROUP BY pair_id, col;

-- name: empty_cells
CREATE OR REPLACE TEMP TABLE {table} (pair_id VARCHAR, col VARCHAR, digest VARCHAR);

-- name: changed_cells
-- Per changed pair (in both versions, some row differs): the columns that differ (a column on one side
-- only counts), and whether any of them is text.
CREATE OR REPLACE TEMP TABLE changed_cells AS
WITH changed AS (
    SELECT a.pair_id FROM digests_a a JOIN digests_b b USING (pair_id) WHERE a.digest <> b.digest
)
SELECT coalesce(a.pair_id, b.pair_id) AS pair_id, coalesce(a.col, b.col) AS col,
       list_contains($text_columns::VARCHAR[], coalesce(a.col, b.col)) AS text
FROM (SELECT * FROM cells_a WHERE pair_id IN (SELECT pair_id FROM changed)) a
FULL OUTER JOIN (SELECT * FROM cells_b WHERE pair_id IN (SELECT pair_id FROM changed)) b
    ON a.pair_id = b.pair_id AND a.col = b.col
WHERE a.digest IS DISTINCT FROM b.digest;

-- name: changed_columns
SELECT col, count(DISTINCT pair_id) AS pairs FROM changed_cells GROUP BY col ORDER BY pairs DESC, col;

-- name: change_kinds
-- Changed pairs whose text changed, and those where only metadata (labels, stage, difficulty, ...) did.
SELECT count(*) FILTER (WHERE text) AS text, count(*) FILTER (WHERE NOT text) AS metadata_only
FROM (SELECT pair_id, bool_or(text) AS text FROM changed_cells GROUP BY pair_id);
