-- name: sides
-- Per pair of the policy run, its best answers (seeded draw) on each side, at most `cap`: `good` ones
-- (right label, clean parse, consistent) may be chosen; wrong-label ones (unparsed included) may be
-- rejected. Identical answers (same label and steps once parsed; unparsed ones by sample) count once,
-- among the first 2 x cap drawn. One aggregate per pair; texts stay in the store until pairs are fixed.
CREATE OR REPLACE TEMP TABLE dpo_sides AS
WITH pol AS (
    SELECT pair_id, sample_id, draw, good,
           hash(CASE WHEN predicted IS NULL THEN sample_id ELSE predicted || steps END) AS answer
    FROM (SELECT e.*, coalesce(e.predicted = e.gold AND e.parse_status = 'ok' AND e.consistent
                               AND NOT coalesce(q.truncated OR q.repetitive, false)
                               AND (SELECT policy_in_format FROM selection_params), false) AS good
          FROM eff_policy e LEFT JOIN sample_gates q ON q.sample_id = e.sample_id WHERE e.parse_status <> 'empty')
    WHERE good OR predicted IS DISTINCT FROM gold
), top AS (
    SELECT pair_id,
           coalesce(min({'d': draw, 'a': answer, 's': sample_id}, 2 * $cap) FILTER (WHERE good), []) AS good_top,
           coalesce(min({'d': draw, 'a': answer, 's': sample_id}, 2 * $cap) FILTER (WHERE NOT good), []) AS wrong_top
    FROM pol GROUP BY pair_id
)
SELECT pair_id, first_distinct(good_top)[1:$cap] AS good_ids, first_distinct(wrong_top)[1:$cap] AS wrong_ids
FROM top;

-- name: sides_one
-- `sides` for one pair per prompt: nothing can repeat, so the first of each side is enough (a plain
-- arg_min per pair, and the steps are never read).
CREATE OR REPLACE TEMP TABLE dpo_sides AS
WITH pol AS (
    SELECT e.pair_id, e.sample_id, e.draw,
           coalesce(e.predicted = e.gold AND e.parse_status = 'ok' AND e.consistent
                    AND NOT coalesce(q.truncated OR q.repetitive, false)
                    AND (SELECT policy_in_format FROM selection_params), false) AS good
    FROM eff_policy e
    LEFT JOIN sample_gates q ON q.sample_id = e.sample_id
    WHERE e.parse_status <> 'empty'
      AND (coalesce(e.predicted = e.gold AND e.parse_status = 'ok' AND e.consistent
                    AND NOT coalesce(q.truncated OR q.repetitive, false)
                    AND (SELECT policy_in_format FROM selection_params), false)
           OR e.predicted IS DISTINCT FROM e.gold)
), top AS (
    SELECT pair_id, arg_min(sample_id, draw) FILTER (WHERE good) AS good_id,
           arg_min(sample_id, draw) FILTER (WHERE NOT good) AS wrong_id
    FROM pol GROUP BY pair_id
)
SELECT pair_id, CASE WHEN good_id IS NULL THEN [] ELSE [good_id] END AS good_ids,
       CASE WHEN wrong_id IS NULL THEN [] ELSE [wrong_id] END AS wrong_ids
FROM top;

-- name: groups
-- Each pair's case: mixed (a clean right and a wrong answer), all_wrong (no right label at all),
-- unclean (right labels, none clean, some wrong), all_right (nothing wrong left to reject). The right
-- count is the policy run's c (pair_counts), reviews aside; all_wrong and unclean are rescued alike.
CREATE OR REPLACE TEMP TABLE dpo_groups AS
SELECT s.pair_id, s.c AS n_right, len(coalesce(d.good_ids, [])) AS n_good, len(coalesce(d.wrong_ids, [])) AS n_wrong,
       CASE WHEN len(coalesce(d.wrong_ids, [])) = 0 THEN 'all_right'
            WHEN len(d.good_ids) > 0 THEN 'mixed'
            WHEN s.c = 0 THEN 'all_wrong'
            ELSE 'unclean' END AS kind
FROM pair_stage s
CROSS JOIN selection_params sp
JOIN gold_pairs g ON g.pair_id = s.pair_id
LEFT JOIN dpo_sides d ON d.pair_id = s.pair_id
WHERE len(sp.sources) = 0 OR list_contains(sp.sources, g.source);

-- name: mixed
-- Up to `cap` pairs per prompt: the i-th chosen with the i-th rejected, the shorter side cycling. The
-- two always differ in label, so never in text.
CREATE OR REPLACE TEMP TABLE dpo_pairs AS
SELECT pair_id, good_ids[i % len(good_ids) + 1] AS chosen_id, wrong_ids[i % len(wrong_ids) + 1] AS rejected_id,
       'policy' AS chosen_from
FROM (SELECT d.pair_id, d.good_ids, d.wrong_ids,
             unnest(range(least($cap, greatest(len(d.good_ids), len(d.wrong_ids))))) AS i
      FROM dpo_sides d JOIN dpo_groups g ON g.pair_id = d.pair_id AND g.kind = 'mixed');

-- name: wanted
-- Pairs the teacher's answer rescues: wrong answers and no clean right one.
INSERT INTO wanted_pairs SELECT pair_id FROM dpo_groups WHERE kind IN ('all_wrong', 'unclean');

-- name: teacher
-- The teacher's answer (gold label, export order) against up to `cap` distinct wrong answers.
INSERT INTO dpo_pairs
SELECT w.pair_id, t.sample_id, w.wrong_ids[w.i + 1], 'teacher'
FROM (SELECT d.pair_id, d.wrong_ids, unnest(range(least($cap, len(d.wrong_ids)))) AS i
      FROM dpo_sides d JOIN wanted_pairs USING (pair_id)) w
JOIN best_teacher t ON t.pair_id = w.pair_id;

-- name: rows
-- Ids only: the texts join in at export (final_dpo), so no selection step holds answer texts.
CREATE OR REPLACE TEMP TABLE rows_dpo AS
SELECT d.pair_id, g.query_id, g.label, d.chosen_from,
       d.chosen_id AS chosen_sample_id, d.rejected_id AS rejected_sample_id,
       coalesce(s.difficulty, 'unknown') AS difficulty, coalesce(s.stage, p.unknown_stage) AS stage,
       hash(d.chosen_id, d.rejected_id, p.seed) AS draw
FROM dpo_pairs d
CROSS JOIN selection_params p
JOIN gold_pairs g ON g.pair_id = d.pair_id
LEFT JOIN pair_stage s ON s.pair_id = d.pair_id;

-- name: counts
SELECT kind, count(*) AS pairs FROM dpo_groups GROUP BY kind ORDER BY kind;

-- name: row_counts
SELECT chosen_from, count(*) AS rows, count(DISTINCT pair_id) AS pairs FROM rows_dpo GROUP BY chosen_from ORDER BY chosen_from;

-- name: dropped
-- Pairs of the policy run that give no preference pair: nothing wrong to reject (all_correct), or wrong
-- answers but no clean right one and no teacher answer to stand in (no_chosen).
INSERT INTO dropped
SELECT 'dpo', NULL, g.pair_id, CASE WHEN g.kind = 'all_right' THEN 'all_correct' ELSE 'no_chosen' END
FROM dpo_groups g
WHERE g.pair_id NOT IN (SELECT pair_id FROM dpo_pairs);

-- name: policy_in_format
SELECT policy_in_format FROM selection_params;
