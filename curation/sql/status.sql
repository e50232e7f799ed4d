-- What is in the store, for `cotgen status`.

-- name: pairs_by_source
SELECT source, scheme, label, count(*) AS pairs FROM pairs GROUP BY ALL ORDER BY source, scheme, label DESC

-- name: total_pairs
SELECT count(*) FROM pairs

-- name: disagreements
SELECT count(DISTINCT pair_id) FROM label_disagreements

-- name: runs
SELECT r.name, r.role, r.model, r.status, count(s.sample_id) AS samples,
       any_value(r.lease_pid) AS lease_pid, any_value(r.lease_host) AS lease_host,
       any_value(r.heartbeat_at) AS heartbeat_at
FROM runs r LEFT JOIN samples s USING (run_id) GROUP BY r.name, r.role, r.model, r.status ORDER BY min(r.started_at)

-- name: samples
SELECT count(*) FROM samples

-- name: reviews
SELECT annotator, count(*) AS decisions FROM reviews GROUP BY annotator ORDER BY annotator

-- name: datasets
SELECT name, version, content_hash, created_at FROM dataset_versions ORDER BY name, version
