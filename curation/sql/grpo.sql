-- name: kept
-- TaoSR1 stage 3: prompts the policy sometimes solves, 0 < c < gamma * n with c its clean right answers
-- (all-right and all-wrong groups give GRPO no signal); curation.difficulty.describe_bins words it.
CREATE OR REPLACE TEMP TABLE grpo_kept AS
SELECT s.pair_id, g.query_id, g.label, g.scheme, s.n, s.c, s.difficulty, s.stage,
       hash(s.pair_id, p.seed) AS draw
FROM pair_stage s
CROSS JOIN selection_params p
JOIN gold_pairs g ON g.pair_id = s.pair_id
WHERE s.c > 0 AND s.c < $gamma * s.n - 1e-9
  AND (len(p.sources) = 0 OR list_contains(p.sources, g.source));

-- name: rows
-- Class balance: each label keeps at most `balance` x the rarest label's count (seeded draw decides
-- which); a NULL balance keeps the natural distribution.
CREATE OR REPLACE TEMP TABLE rows_grpo AS
WITH cap AS (SELECT floor($balance::DOUBLE * min(k)) AS cap FROM (SELECT count(*) AS k FROM grpo_kept GROUP BY label))
SELECT k.* FROM grpo_kept k CROSS JOIN cap
QUALIFY $balance::DOUBLE IS NULL OR row_number() OVER (PARTITION BY k.label ORDER BY k.draw) <= cap.cap;

-- name: dropped
-- Prompts outside the window (all_wrong: c = 0; all_correct: c = n; too_easy: gamma * n <= c < n), then
-- those the class balance left out.
INSERT INTO dropped
SELECT 'grpo', NULL, s.pair_id,
       CASE WHEN s.c = 0 THEN 'all_wrong' WHEN s.c >= s.n THEN 'all_correct' ELSE 'too_easy' END
FROM pair_stage s
CROSS JOIN selection_params p
JOIN gold_pairs g ON g.pair_id = s.pair_id
WHERE s.pair_id NOT IN (SELECT pair_id FROM grpo_kept)
  AND (len(p.sources) = 0 OR list_contains(p.sources, g.source))
UNION ALL
SELECT 'grpo', NULL, pair_id, 'balanced_out' FROM grpo_kept WHERE pair_id NOT IN (SELECT pair_id FROM rows_grpo);

-- name: counts
SELECT (SELECT count(*) FROM pair_stage) AS candidates, (SELECT count(*) FROM grpo_kept) AS kept,
       (SELECT count(*) FROM rows_grpo) AS rows;
