-- name: export_pairs
-- Every labelled pair of the exported sources: the splits are assigned over all of them (whether or not
-- some selection kept a row of theirs) and the `eval` kind carries each with its policy prompt.
CREATE OR REPLACE TEMP TABLE export_pairs AS
SELECT g.pair_id FROM gold_pairs g CROSS JOIN selection_params p
WHERE len(p.sources) = 0 OR list_contains(p.sources, g.source);

-- name: schemes
SELECT g.scheme, count(*) AS pairs FROM export_pairs e JOIN gold_pairs g USING (pair_id) GROUP BY ALL ORDER BY pairs DESC, g.scheme;

-- name: prompt_pairs
-- The pairs the rows need a policy prompt for, with the gold label after relabels.
SELECT g.pair_id, g.source, g.query, g.title, g.description, CAST(g.attributes AS VARCHAR) AS attributes,
       g.label, g.raw_label, g.scheme, g.query_id
FROM gold_pairs g JOIN export_pairs USING (pair_id)
ORDER BY g.pair_id;

-- name: prompt_hashes
-- A 64-bit hash per rendered prompt: the rows carry it instead of the messages until they leave DuckDB.
CREATE OR REPLACE TEMP TABLE prompt_hashes AS SELECT pair_id, hash(prompt) AS prompt_hash FROM prompts;

-- name: prompt_hash_column
SELECT prompt_hash FROM prompt_hashes;

-- name: final_sft
-- Each final_* query returns flat columns (Arrow puts them in order: split, stage, draw, pair id, which
-- lets every split be a zero-copy slice); texts that become messages end in
-- _text; the prompt travels as its hash (the rendered messages join back in Arrow); row_hash (DuckDB's
-- 64-bit hash of the whole row, split included) feeds the content hash, which depends on the rows alone.
WITH r AS (
    SELECT x.split, ph.prompt_hash, t.completion AS completion_text, t.reasoning_content, t.pair_id, t.query_id,
           t.label, t.stage, t.difficulty, t.sample_id, t.draw
    FROM rows_sft t JOIN prompt_hashes ph USING (pair_id) JOIN split_of x USING (query_id)
)
SELECT r.*, hash(r) AS row_hash FROM r;

-- name: final_dpo
-- Texts: the policy's raw completion (an edit wins) or, for a rescued pair, the teacher's answer
-- rendered in the export's order.
WITH r AS (
    SELECT x.split, ph.prompt_hash,
           CASE WHEN d.chosen_from = 'teacher' THEN t.completion ELSE coalesce(ec.text, cc.text) END AS chosen_text,
           coalesce(er.text, cr.text) AS rejected_text,
           d.pair_id, d.query_id, d.label, d.chosen_from, d.chosen_sample_id, d.rejected_sample_id, d.difficulty,
           d.stage, d.draw
    FROM rows_dpo d
    JOIN prompt_hashes ph USING (pair_id)
    JOIN split_of x USING (query_id)
    JOIN completions cc ON cc.request_key = d.chosen_sample_id
    JOIN completions cr ON cr.request_key = d.rejected_sample_id
    LEFT JOIN best_teacher t ON t.sample_id = d.chosen_sample_id
    LEFT JOIN edits ec ON ec.sample_id = d.chosen_sample_id
    LEFT JOIN edits er ON er.sample_id = d.rejected_sample_id
)
SELECT r.*, hash(r) AS row_hash FROM r;

-- name: final_grpo
-- Prompt-only rows; `label` is what the reward function compares a rollout's label with.
WITH r AS (
    SELECT x.split, ph.prompt_hash, g.label, g.difficulty, g.scheme, g.pair_id, g.query_id, g.stage, g.n, g.c, g.draw
    FROM rows_grpo g JOIN prompt_hashes ph USING (pair_id) JOIN split_of x USING (query_id)
)
SELECT r.*, hash(r) AS row_hash FROM r;

-- name: final_steps
-- TRL's stepwise-supervision format: completions = the steps, labels = one bool per step; label_sources
-- says whose label each is (human | judge).
WITH r AS (
    SELECT x.split, ph.prompt_hash, t.completions, t.labels, t.label_sources, t.pair_id, t.query_id, t.label, t.sample_id,
           t.difficulty, t.stage, t.draw
    FROM rows_steps t JOIN prompt_hashes ph USING (pair_id) JOIN split_of x USING (query_id)
)
SELECT r.*, hash(r) AS row_hash FROM r;

-- name: final_eval
-- Every labelled pair with its split, the policy prompt and the gold label (what `cotgen eval` scores).
WITH r AS (
    SELECT x.split, ph.prompt_hash, g.pair_id, g.query_id, g.label, g.scheme, 0 AS stage, 0::UBIGINT AS draw
    FROM export_pairs e JOIN gold_pairs g USING (pair_id) JOIN prompt_hashes ph USING (pair_id)
    JOIN split_of x USING (query_id)
)
SELECT r.*, hash(r) AS row_hash FROM r;
