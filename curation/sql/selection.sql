-- name: macros
-- Sample ids of a list of {d: draw, a: answer hash, s: sample_id}, keeping the first of each answer.
CREATE OR REPLACE TEMP MACRO first_distinct(l) AS
    list_transform(list_filter(l, lambda x, i: list_position(list_transform(l, lambda y: y.a), x.a) = i), lambda x: x.s);

-- name: params
-- One row of knobs the views below read (views cannot take statement parameters). policy_in_format: the
-- policy run was prompted for the export's answer order (its raw answers become DPO texts as they are;
-- a run that does not record its order is taken at its word).
CREATE OR REPLACE TEMP TABLE selection_params AS
SELECT $seed::VARCHAR AS seed, $sources::VARCHAR[] AS sources, $teacher_runs::VARCHAR[] AS teacher_runs,
       $policy_run::VARCHAR AS policy_run, $curriculum::VARCHAR[] AS curriculum,
       len($curriculum::VARCHAR[]) + 1 AS unknown_stage,
       coalesce((SELECT json_extract_string(r.params, '$.order') FROM runs r WHERE r.run_id = $policy_run) = $order,
                true) AS policy_in_format;

-- name: edit_texts
-- The latest live edit per sample: the annotator's full corrected answer, parsed again in Python.
SELECT d.sample_id, d.edited_text, g.scheme
FROM sample_decisions d JOIN gold_pairs g USING (pair_id)
WHERE d.action = 'edit' AND d.edited_text IS NOT NULL
ORDER BY d.sample_id;

-- name: create_edits
CREATE OR REPLACE TEMP TABLE edits AS SELECT * FROM edits_arrow;

-- name: effective
-- Samples as the reviews leave them: rejected ones gone, an edit (re-parsed) replacing the original,
-- the gold label after relabels; `draw` is the seeded tie-breaker every selection orders by (DuckDB's
-- 64-bit hash: md5 costs seconds per million rows; the manifest records the DuckDB version).
-- One view per role (eff_teacher, eff_policy, and eff for all runs), each with a literal run filter so
-- DuckDB skips other runs' row groups instead of joining their samples.
CREATE OR REPLACE TEMP VIEW {view} AS
SELECT s.sample_id, s.run_id, s.pair_id, g.query_id, g.source, g.label AS gold, d.action AS decision,
       e.sample_id IS NOT NULL AS edited, e.text AS edited_text,
       CASE WHEN e.sample_id IS NULL THEN CAST(s.steps AS VARCHAR) ELSE e.steps END AS steps,
       CASE WHEN e.sample_id IS NULL THEN s.predicted_label ELSE e.predicted_label END AS predicted,
       CASE WHEN e.sample_id IS NULL THEN s.parse_status ELSE e.parse_status END AS parse_status,
       CASE WHEN e.sample_id IS NULL THEN s.parse_reason ELSE e.parse_reason END AS parse_reason,
       CASE WHEN e.sample_id IS NULL THEN s.consistent ELSE e.consistent END AS consistent,
       hash(s.sample_id, p.seed) AS draw
FROM samples s
CROSS JOIN selection_params p
JOIN gold_pairs g ON g.pair_id = s.pair_id
LEFT JOIN sample_decisions d ON d.sample_id = s.sample_id
LEFT JOIN edits e ON e.sample_id = s.sample_id
WHERE {runs}
  AND (len(p.sources) = 0 OR list_contains(p.sources, g.source))
  AND d.action IS DISTINCT FROM 'reject';

-- name: gates
-- The quality gates per sample: cut at max_tokens (teacher and policy answers; a cheap column scan) here,
-- and one word n-gram repeated more than curation.max_ngram_repeats times, which costs a pass over the
-- text and is checked in Python on the teacher answers a selection is about to use (insert_repetitive).
-- The gates judge model output: an annotator's edit passes.
CREATE OR REPLACE TEMP TABLE sample_gates AS
SELECT c.request_key AS sample_id, true AS truncated, false AS repetitive
FROM completions c CROSS JOIN selection_params p
WHERE $drop_truncated AND c.finish_reason = 'length'
  AND (list_contains(p.teacher_runs, c.run_id) OR c.run_id = p.policy_run)
  AND c.request_key NOT IN (SELECT sample_id FROM edits);

-- name: insert_repetitive
INSERT INTO sample_gates SELECT sample_id, false, true FROM repetitive_arrow;

-- name: pair_stage
-- Difficulty and curriculum stage (1-based position in the curriculum) per pair, from the policy run.
CREATE OR REPLACE TEMP TABLE pair_stage AS
SELECT pc.pair_id, pc.n, pc.c, difficulty_bin(pc.n, pc.c, $gamma, $easy) AS difficulty,
       coalesce(list_position(p.curriculum, difficulty_bin(pc.n, pc.c, $gamma, $easy)), p.unknown_stage) AS stage
FROM pair_counts pc CROSS JOIN selection_params p
WHERE pc.run_id = p.policy_run;

-- name: create_teacher_answers
CREATE OR REPLACE TEMP TABLE teacher_answers (
    sample_id VARCHAR, pair_id VARCHAR, gold VARCHAR, decision VARCHAR, edited BOOLEAN, draw UBIGINT,
    completion VARCHAR, cot VARCHAR, chars BIGINT
);
CREATE OR REPLACE TEMP TABLE wanted_pairs (pair_id VARCHAR);

-- name: teacher_candidates
-- Teacher answers fit to train on: parsed cleanly, agreeing with the gold label after reviews, internally
-- consistent, through the quality gates. All pairs, or only those in wanted_pairs; answers already
-- rendered are skipped.
SELECT e.sample_id, e.pair_id, e.gold, e.decision, e.edited, e.draw, e.steps,
       CASE WHEN e.edited THEN NULL ELSE c.text END AS text
FROM eff_teacher e
LEFT JOIN sample_gates q ON q.sample_id = e.sample_id
LEFT JOIN completions c ON c.request_key = e.sample_id
WHERE e.predicted = e.gold AND e.parse_status = 'ok' AND e.consistent
  AND NOT coalesce(q.truncated OR q.repetitive, false)
  AND ($all_pairs OR e.pair_id IN (SELECT pair_id FROM wanted_pairs))
  AND e.sample_id NOT IN (SELECT sample_id FROM teacher_answers)
ORDER BY e.sample_id;

-- name: insert_teacher_answers
INSERT INTO teacher_answers SELECT * FROM rendered_arrow;

-- name: best_teacher
-- The teacher answer each pair would use: reviewer-accepted first, then edited, then the seeded draw.
CREATE OR REPLACE TEMP TABLE best_teacher AS
SELECT * FROM teacher_answers
WHERE chars BETWEEN $min_chars AND $max_chars
QUALIFY row_number() OVER (PARTITION BY pair_id ORDER BY coalesce(decision = 'accept', false) DESC, edited DESC, draw) = 1;

-- name: label_cv
-- Coefficient of variation of a table's label counts (0 = balanced), and how many labels it has.
SELECT coalesce(stddev_pop(k) / avg(k), 0.0), count(*) FROM (SELECT label, count(*) AS k FROM {table} GROUP BY label);

-- name: label_counts
SELECT label, count(*) AS rows FROM {table} GROUP BY label ORDER BY label;

-- name: create_dropped
-- Every row a selection leaves out, with why (datatrove's exclusion writer): the export writes it as
-- dropped.parquet. sample_id is NULL where a whole pair (prompt) is dropped.
CREATE OR REPLACE TEMP TABLE dropped (kind VARCHAR, sample_id VARCHAR, pair_id VARCHAR, reason VARCHAR);

-- name: insert_dropped
INSERT INTO dropped SELECT kind, sample_id, pair_id, reason FROM dropped_arrow;

-- name: dropped_counts
SELECT kind, reason, count(*) AS rows FROM dropped GROUP BY ALL ORDER BY kind, rows DESC, reason;

-- name: dropped_rows
SELECT kind, sample_id, pair_id, reason FROM dropped ORDER BY kind, reason, pair_id, sample_id;

-- name: insertion_order
-- Selections write temp tables whose row order nothing depends on (exports sort explicitly), and
-- DuckDB needs much less memory when it may reorder.
SET preserve_insertion_order = false;
