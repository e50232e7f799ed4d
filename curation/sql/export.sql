-- name: export_pairs
CREATE OR REPLACE TEMP TABLE export_pairs AS SELECT DISTINCT pair_id FROM ({union});

-- name: schemes
SELECT g.scheme, count(*) AS pairs FROM export_pairs e JOIN gold_pairs g USING (pair_id) GROUP BY ALL ORDER BY pairs DESC, g.scheme;

-- name: prompt_pairs
-- The pairs the rows need a policy prompt for, with the gold label after relabels.
SELECT g.pair_id, g.source, g.query, g.title, g.description, CAST(g.attributes AS VARCHAR) AS attributes,
       g.label, g.raw_label, g.scheme, g.query_id
FROM gold_pairs g JOIN export_pairs USING (pair_id)
ORDER BY g.pair_id;

-- name: final_sft
-- TRL's conversational prompt-completion format; the CoT also kept apart as reasoning_content.
SELECT x.split, pr.prompt, [{'role': 'assistant', 'content': r.completion}] AS completion,
       r.reasoning_content, r.pair_id, r.query_id, r.label, r.stage, r.difficulty, r.sample_id
FROM rows_sft r JOIN prompts pr USING (pair_id) JOIN split_of x USING (query_id)
ORDER BY x.split, r.stage, r.draw, r.pair_id;

-- name: final_dpo
-- TRL's conversational preference format. Texts: the policy's raw completion (an edit wins) or, for a
-- rescued pair, the teacher's answer rendered in the export's order.
SELECT x.split, pr.prompt,
       [{'role': 'assistant',
         'content': CASE WHEN r.chosen_from = 'teacher' THEN t.completion ELSE coalesce(ec.text, cc.text) END}] AS chosen,
       [{'role': 'assistant', 'content': coalesce(er.text, cr.text)}] AS rejected,
       r.pair_id, r.query_id, r.label, r.chosen_from, r.chosen_sample_id, r.rejected_sample_id, r.difficulty, r.stage
FROM rows_dpo r
JOIN prompts pr USING (pair_id)
JOIN split_of x USING (query_id)
JOIN completions cc ON cc.request_key = r.chosen_sample_id
JOIN completions cr ON cr.request_key = r.rejected_sample_id
LEFT JOIN best_teacher t ON t.sample_id = r.chosen_sample_id
LEFT JOIN edits ec ON ec.sample_id = r.chosen_sample_id
LEFT JOIN edits er ON er.sample_id = r.rejected_sample_id
ORDER BY x.split, r.stage, r.draw, r.pair_id;

-- name: final_grpo
-- Prompt-only rows; `label` is what the reward function compares a rollout's label with.
SELECT x.split, pr.prompt, r.label, r.difficulty, r.scheme, r.pair_id, r.query_id, r.stage, r.n, r.c
FROM rows_grpo r JOIN prompts pr USING (pair_id) JOIN split_of x USING (query_id)
ORDER BY x.split, r.stage, r.draw, r.pair_id;

-- name: final_steps
-- TRL's stepwise-supervision format: completions = the steps, labels = one bool per step.
SELECT x.split, pr.prompt, r.completions, r.labels, r.pair_id, r.query_id, r.label, r.sample_id,
       r.difficulty, r.stage
FROM rows_steps r JOIN prompts pr USING (pair_id) JOIN split_of x USING (query_id)
ORDER BY x.split, r.stage, r.draw, r.pair_id;

-- name: table_hash
-- Content hash of one table: the sorted per-row hashes, so it depends on the rows and nothing else.
SELECT sha256(coalesce(string_agg(h, ',' ORDER BY h), ''))
FROM (SELECT md5(CAST(to_json(t) AS VARCHAR)) AS h FROM {table} AS t);
