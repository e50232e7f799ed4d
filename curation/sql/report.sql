-- The data report's figures (curation/report.py plots them). `report_splits` is the query -> split
-- assignment of a dataset version, registered by the caller; without one every pair counts as `all`.

-- name: labels_by_split
SELECT coalesce(s.split, 'all') AS split, p.label, count(*) AS pairs
FROM gold_pairs p LEFT JOIN report_splits s USING (query_id)
GROUP BY ALL ORDER BY split, p.label

-- name: labels_all
SELECT 'all' AS split, label, count(*) AS pairs FROM gold_pairs GROUP BY ALL ORDER BY label

-- name: difficulty
-- The stored difficulty of the policy runs named (`curate difficulty` or an export computes it).
SELECT r.name, d.difficulty, count(*) AS pairs
FROM pair_difficulty d JOIN runs r USING (run_id)
WHERE r.role = 'policy' AND list_contains($runs::VARCHAR[], r.name)
GROUP BY ALL ORDER BY r.name, d.difficulty

-- name: cited_rules
-- The rules retrieved for the most pairs (each pair counted once per rule, over every retrieval setting).
SELECT rule_id, count(DISTINCT pair_id) AS pairs
FROM (SELECT pair_id, unnest(rule_ids) AS rule_id FROM retrievals)
GROUP BY rule_id ORDER BY pairs DESC, rule_id LIMIT $limit

-- name: retrieval_pairs
SELECT count(DISTINCT pair_id) FROM retrievals
