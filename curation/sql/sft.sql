-- name: pool
-- Rendered teacher answers within the length bounds, ranked per pair: reviewer-accepted first, then
-- edited, then the seeded draw. With $drop_wrong_steps (curation.sft_drop_wrong_steps), an unreviewed
-- answer with a step labelled wrong (hybrid_step_labels: a human mark, else the judge) stays out: the
-- right label reached by wrong reasoning.
CREATE OR REPLACE TEMP TABLE sft_pool AS
SELECT *, row_number() OVER (
           PARTITION BY pair_id ORDER BY coalesce(decision = 'accept', false) DESC, edited DESC, draw) AS rank
FROM teacher_answers
WHERE chars BETWEEN $min_chars AND $max_chars
  AND NOT ($drop_wrong_steps AND decision IS NULL
           AND sample_id IN (SELECT sample_id FROM hybrid_step_labels WHERE NOT correct));

-- name: pool_texts
SELECT sample_id, pair_id, cot FROM sft_pool ORDER BY pair_id, rank;

-- name: create_dropped
CREATE OR REPLACE TEMP TABLE diversity_dropped AS SELECT * FROM dropped_arrow;

-- name: picked
-- k answers per pair, with the pair's difficulty and curriculum stage from the policy run when known.
CREATE OR REPLACE TEMP TABLE sft_picked AS
SELECT t.pair_id, g.query_id, t.gold AS label, t.completion, t.cot AS reasoning_content, t.sample_id,
       coalesce(s.difficulty, 'unknown') AS difficulty, coalesce(s.stage, p.unknown_stage) AS stage, t.draw
FROM sft_pool t
CROSS JOIN selection_params p
JOIN gold_pairs g ON g.pair_id = t.pair_id
LEFT JOIN pair_stage s ON s.pair_id = t.pair_id
WHERE t.sample_id NOT IN (SELECT sample_id FROM diversity_dropped)
QUALIFY row_number() OVER (PARTITION BY t.pair_id ORDER BY t.rank) <= $k;

-- name: rows
CREATE OR REPLACE TEMP TABLE rows_sft AS SELECT * FROM sft_picked;

-- name: balance_train
-- Optional class balance of the training split, run once splits are known: each label keeps at most
-- `balance` x the rarest label's rows (seeded draw decides which). A small model trained on a skewed mix
-- learns to answer the majority grade; validation and test keep the natural mix so evaluation measures
-- the distribution the model will meet.
CREATE OR REPLACE TEMP TABLE rows_sft AS
WITH t AS (SELECT p.*, x.split = $train AS in_train FROM sft_picked p JOIN split_of x USING (query_id)),
cap AS (SELECT floor($balance::DOUBLE * min(k)) AS cap FROM (SELECT count(*) AS k FROM t WHERE in_train GROUP BY label))
SELECT t.* EXCLUDE (in_train) FROM t CROSS JOIN cap
QUALIFY NOT in_train OR row_number() OVER (PARTITION BY in_train, t.label ORDER BY t.draw) <= cap.cap;

-- name: counts
SELECT (SELECT count(*) FROM teacher_answers) AS eligible,
       (SELECT count(*) FROM sft_pool) AS within_length,
       (SELECT count(*) FROM diversity_dropped) AS near_duplicates,
       (SELECT count(*) FROM sft_picked) - (SELECT count(*) FROM rows_sft) AS balanced_out,
       (SELECT count(*) FROM rows_sft) AS rows,
       (SELECT count(DISTINCT pair_id) FROM rows_sft) AS pairs;

-- name: dropped
-- Every teacher sample of the selected runs (and sources) that is not an SFT row, with the first reason
-- that ruled it out, in the order the selection applies them.
INSERT INTO dropped
WITH teacher AS (
    SELECT s.sample_id, s.pair_id
    FROM samples s CROSS JOIN selection_params p JOIN gold_pairs g ON g.pair_id = s.pair_id
    WHERE list_contains(p.teacher_runs, s.run_id) AND (len(p.sources) = 0 OR list_contains(p.sources, g.source))
)
SELECT 'sft', t.sample_id, t.pair_id,
       CASE WHEN e.sample_id IS NULL THEN 'review_rejected'
            WHEN q.truncated THEN 'truncated'
            WHEN e.parse_status = 'partial' AND contains(e.parse_reason, $misplaced) THEN 'label_misplaced'
            WHEN e.parse_status = 'partial' THEN 'steps_missing'
            WHEN e.parse_status <> 'ok' THEN 'parse_failed'
            WHEN e.predicted IS DISTINCT FROM e.gold THEN 'disagrees_with_gold'
            WHEN NOT e.consistent THEN 'inconsistent'
            WHEN q.repetitive THEN 'repetitive'
            WHEN $drop_wrong_steps AND e.decision IS NULL
                 AND t.sample_id IN (SELECT sample_id FROM hybrid_step_labels WHERE NOT correct) THEN 'wrong_steps'
            WHEN a.chars < $min_chars THEN 'too_short'
            WHEN a.chars > $max_chars THEN 'too_long'
            WHEN t.sample_id IN (SELECT sample_id FROM diversity_dropped) THEN 'near_duplicate'
            ELSE 'over_per_pair' END
FROM teacher t
LEFT JOIN eff_teacher e ON e.sample_id = t.sample_id
LEFT JOIN teacher_answers a ON a.sample_id = t.sample_id
LEFT JOIN sample_gates q ON q.sample_id = t.sample_id
WHERE t.sample_id NOT IN (SELECT sample_id FROM sft_picked);

-- name: dropped_balanced
INSERT INTO dropped
SELECT 'sft', sample_id, pair_id, 'balanced_out' FROM sft_picked WHERE sample_id NOT IN (SELECT sample_id FROM rows_sft);
