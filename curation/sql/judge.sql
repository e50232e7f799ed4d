-- name: run_by_name
SELECT judge_run_id, samples_role, backend, model, prompt_name, prompt_hash, params, status
FROM judge_runs WHERE name = ?;

-- name: insert_run
INSERT INTO judge_runs (judge_run_id, name, samples_role, backend, model, prompt_name, prompt_hash, params, status,
                        started_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, 'running', ?);

-- name: resume_run
UPDATE judge_runs SET status = 'running', params = ?::JSON, finished_at = NULL WHERE judge_run_id = ?;

-- name: finish_run
UPDATE judge_runs SET status = ?, summary = ?::JSON, finished_at = ? WHERE judge_run_id = ?;

-- name: candidates
-- CoT samples with steps from the generation runs of a role (or the named runs), with their pair after
-- relabels and the rules of their prompt; policy samples, whose prompt has no rules, borrow the rules a
-- teacher prompt of the same pair was given.
WITH pair_rules AS (
    SELECT pair_id, arg_min(rule_ids, sample_id) AS rule_ids
    FROM samples WHERE len(coalesce(rule_ids, [])) > 0 GROUP BY pair_id
)
SELECT s.sample_id, r.name AS run, g.pair_id, g.source, g.query_id, g.query, g.title, g.description, g.attributes,
       g.raw_label, g.label, g.scheme, CAST(s.steps AS VARCHAR) AS steps, s.predicted_label,
       CASE WHEN len(coalesce(s.rule_ids, [])) > 0 THEN s.rule_ids ELSE coalesce(pr.rule_ids, []) END AS rule_ids
FROM samples s
JOIN runs r ON r.run_id = s.run_id
JOIN gold_pairs g ON g.pair_id = s.pair_id
LEFT JOIN pair_rules pr ON pr.pair_id = s.pair_id
WHERE (CASE WHEN len($runs) > 0 THEN list_contains($runs, r.name) ELSE r.role = $role END)
  AND json_array_length(s.steps) > 0
ORDER BY r.started_at, r.name, g.source, g.source_row, s.pair_id, s.sample_index
LIMIT $limit;

-- name: unknown_runs
SELECT unnest($runs::VARCHAR[]) AS name EXCEPT SELECT name FROM runs;

-- name: done_keys
SELECT k.key FROM judge_probe k SEMI JOIN judgements j ON j.judge_key = k.key;

-- name: insert_judgements
INSERT OR IGNORE INTO judgements
    (judge_key, judge_run_id, sample_id, pair_id, model, prompt_hash, text, status, note, first_wrong, finish_reason,
     tokens_in, tokens_out, latency_s, attempts)
SELECT judge_key, judge_run_id, sample_id, pair_id, model, prompt_hash, text, status, note, first_wrong, finish_reason,
       tokens_in, tokens_out, latency_s, attempts
FROM judgements_batch;

-- name: insert_verdicts
-- Only verdicts whose judgement was new in this batch, so a key is stored once with its verdicts.
INSERT INTO step_verdicts (judge_run_id, sample_id, step_index, step_name, correct, reason, model, prompt_hash, judge_key)
SELECT v.judge_run_id, v.sample_id, v.step_index, v.step_name, v.correct, v.reason, v.model, v.prompt_hash, v.judge_key
FROM verdicts_batch v
WHERE NOT EXISTS (SELECT 1 FROM step_verdicts o WHERE o.judge_key = v.judge_key);

-- name: run_counts
SELECT count(*) AS judgements,
       count(DISTINCT sample_id) AS samples,
       count(*) FILTER (WHERE status = 'ok') AS parsed_ok,
       count(*) FILTER (WHERE status IN ('ok', 'partial')) AS parsed,
       count(*) FILTER (WHERE first_wrong IS NOT NULL) AS with_wrong_step,
       coalesce(sum(tokens_in), 0) AS tokens_in,
       coalesce(sum(tokens_out), 0) AS tokens_out
FROM judgements WHERE judge_run_id = ?;

-- name: run_status_counts
SELECT status, count(*) AS n FROM judgements WHERE judge_run_id = ? GROUP BY ALL ORDER BY n DESC;

-- name: run_step_counts
-- Per step name: steps with a verdict and the share judged wrong.
SELECT step_name, count(correct) AS judged, count(*) FILTER (WHERE NOT correct) AS wrong,
       count(*) FILTER (WHERE NOT correct) / nullif(count(correct), 0) AS wrong_share
FROM step_verdicts WHERE judge_run_id = ?
GROUP BY step_name ORDER BY min(step_index), step_name;

-- name: agreement
-- The judge (its latest verdict per step) against human step marks, per step name: the confusion cells.
SELECT j.step_name,
       count(*) FILTER (WHERE m.step_correct AND j.correct) AS both_correct,
       count(*) FILTER (WHERE m.step_correct AND NOT j.correct) AS human_correct_judge_wrong,
       count(*) FILTER (WHERE NOT m.step_correct AND j.correct) AS human_wrong_judge_correct,
       count(*) FILTER (WHERE NOT m.step_correct AND NOT j.correct) AS both_wrong
FROM judge_step_labels j
JOIN step_marks m ON m.sample_id = j.sample_id AND m.step_index = j.step_index
WHERE m.step_correct IS NOT NULL
GROUP BY j.step_name ORDER BY min(j.step_index), j.step_name;

-- name: label_agreement
-- The judge against each judged sample's own label (against the gold label after relabels): "right answer, wrong reasoning" and the reverse.
WITH judged AS (
    SELECT sample_id, bool_or(NOT correct) AS any_wrong FROM judge_step_labels GROUP BY sample_id
)
SELECT count(*) AS samples,
       count(*) FILTER (WHERE x.right AND j.any_wrong) AS right_label_wrong_steps,
       count(*) FILTER (WHERE NOT x.right AND NOT j.any_wrong) AS wrong_label_right_steps,
       count(*) FILTER (WHERE x.right) AS right_label,
       count(*) FILTER (WHERE NOT x.right) AS wrong_label
FROM judged j
JOIN (SELECT s.sample_id, coalesce(s.predicted_label = g.label, false) AS right
      FROM samples s JOIN gold_pairs g USING (pair_id)) x USING (sample_id);

-- name: judge_runs
SELECT name, samples_role, backend, model, prompt_name, status, started_at FROM judge_runs ORDER BY started_at;

-- name: pair_rules
-- The rules a prompt of each pair was given (its first sample with rules, a teacher's): what the step judge
-- reads beside a CoT whose own prompt had none (a policy's, during SRPO training).
SELECT pair_id, arg_min(rule_ids, sample_id) AS rule_ids
FROM samples
WHERE len(coalesce(rule_ids, [])) > 0 AND pair_id IN (SELECT unnest(?::VARCHAR[]))
GROUP BY pair_id
