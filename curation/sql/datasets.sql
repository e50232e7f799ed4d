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
