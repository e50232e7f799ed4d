-- name: query_groups
-- The queries to place: weight = labelled pairs (all of the exported sources, with rows or not), stratum =
-- the query's most frequent gold label.
-- Ordered by stratum, then a seeded draw, so the greedy pass spreads every stratum over the splits.
WITH per_label AS (
    SELECT g.query_id, g.label, count(*) AS pairs
    FROM export_pairs e JOIN gold_pairs g USING (pair_id)
    GROUP BY ALL
)
SELECT query_id, first(label ORDER BY pairs DESC, label) AS stratum, sum(pairs)::BIGINT AS pairs
FROM per_label
GROUP BY query_id
ORDER BY stratum, md5($seed || ':' || query_id);

-- name: create_split_of
CREATE OR REPLACE TEMP TABLE split_of AS SELECT query_id, split FROM splits_arrow;
