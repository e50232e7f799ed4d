-- name: macros
-- Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k), through log-gamma so large n cannot
-- overflow. NULL where k > n: pass@k is not defined for a pair with fewer than k samples.
CREATE OR REPLACE TEMP MACRO pass_at_k(n, c, k) AS
    CASE WHEN k < 1 OR k > n THEN NULL
         WHEN n - c < k THEN 1.0
         ELSE 1.0 - exp(lgamma(n - c + 1) - lgamma(n - c - k + 1) - lgamma(n + 1) + lgamma(n - k + 1)) END;
-- TaoSR1's bins, checked in this order; the epsilon keeps c <= gamma * n exact for gammas like 0.3.
-- c counts clean right answers (parsed ok, label = gold); curation.difficulty.describe_bins says it in words.
CREATE OR REPLACE TEMP MACRO difficulty_bin(n, c, gamma, easy) AS
    CASE WHEN c = 0 THEN 'unsolved'
         WHEN c >= easy * n - 1e-9 THEN 'easy'
         WHEN c <= gamma * n + 1e-9 THEN 'hard'
         ELSE 'medium' END;

-- name: votes
-- One scan of the samples: (run, pair, predicted label, clean) counts, then the gold label after reviews
-- joined onto those few rows (aggregating first keeps the join off the millions of samples). Correctness
-- is recomputed from it (a relabel changes it); samples.correct is not trusted. `predicted` is the
-- tolerant reading (ok or partial); `clean` marks answers fit for training (parsed ok).
CREATE OR REPLACE TEMP TABLE sample_votes AS
WITH v AS (
    SELECT run_id, pair_id,
           CASE WHEN parse_status IN ('ok', 'partial') THEN predicted_label END AS predicted,
           parse_status = 'ok' AS clean,
           count(*)::INTEGER AS votes
    FROM samples
    WHERE list_contains($runs::VARCHAR[], run_id)
    GROUP BY ALL
)
SELECT v.run_id, v.pair_id, g.label AS gold, v.predicted, v.clean, v.votes
FROM v JOIN gold_pairs g ON g.pair_id = v.pair_id;

-- name: pair_counts
-- Per (run, pair): n samples, c right and parsed ok (clean: difficulty, GRPO), c_any right by the tolerant
-- reading (pass@k, accuracy), parsed answers, and the majority vote over all n samples: unparsed answers are one more
-- candidate, which wins ties (so 1 right + 3 unparsed is no majority); ties between labels: lowest id.
CREATE OR REPLACE TEMP TABLE pair_counts AS
WITH per_label AS (
    SELECT run_id, pair_id, predicted, any_value(gold) AS gold, sum(votes) AS votes,
           coalesce(sum(votes) FILTER (WHERE clean), 0) AS clean_votes
    FROM sample_votes
    GROUP BY run_id, pair_id, predicted
)
SELECT run_id, pair_id, any_value(gold) AS gold,
       sum(votes)::INTEGER AS n,
       coalesce(sum(clean_votes) FILTER (WHERE predicted = gold), 0)::INTEGER AS c,
       coalesce(sum(votes) FILTER (WHERE predicted = gold), 0)::INTEGER AS c_any,
       coalesce(sum(votes) FILTER (WHERE predicted IS NOT NULL), 0)::INTEGER AS parsed,
       first(predicted ORDER BY votes DESC, predicted IS NULL DESC, predicted) AS majority
FROM per_label
GROUP BY run_id, pair_id;

-- name: run_summary
-- gold_shown: the run's prompt showed the gold label (explain_gold), so agreement is label compliance.
SELECT p.run_id, any_value(r.name) AS name, any_value(r.role) AS role, any_value(r.model) AS model,
       coalesce(try_cast(json_extract_string(any_value(r.params), '$.explain_gold') AS BOOLEAN), false) AS gold_shown,
       count(*) AS pairs, sum(p.n)::BIGINT AS samples, max(p.n) AS n_max, min(p.n) AS n_min,
       sum(p.parsed) / sum(p.n) AS parse_rate, sum(p.c_any) / sum(p.n) AS accuracy,
       avg(coalesce(p.majority = p.gold, false)::INTEGER) AS majority_accuracy
FROM pair_counts p JOIN runs r USING (run_id)
GROUP BY p.run_id
ORDER BY min(r.started_at), p.run_id;

-- name: run_pass_at_k
-- Grouping by (n, c) first: pass@k depends on nothing else, so a million pairs cost a few hundred rows.
-- {c}: c_any (right by the tolerant reading: `curate stats`) or c (clean right answers: the export, whose
-- pair counts may come from pair_difficulty, which keeps c only).
WITH nc AS (
    SELECT run_id, n, {c} AS c, count(*) AS pairs FROM pair_counts GROUP BY ALL
), ks AS (
    SELECT run_id, unnest(range(1, max(n) + 1)) AS k FROM nc GROUP BY run_id
)
SELECT run_id, k, sum(pairs * pass_at_k(n, c, k)) / sum(pairs) AS pass_at_k, sum(pairs)::BIGINT AS pairs
FROM nc JOIN ks USING (run_id)
WHERE k <= n
GROUP BY run_id, k
ORDER BY run_id, k;

-- name: label_stats
SELECT run_id, gold AS label, count(*) AS pairs, sum(n)::BIGINT AS samples, sum(c_any) / sum(n) AS accuracy,
       avg((c_any > 0)::INTEGER) AS pass_at_n, avg(coalesce(majority = gold, false)::INTEGER) AS majority_accuracy
FROM pair_counts
GROUP BY ALL
ORDER BY run_id, label;

-- name: confusion
SELECT run_id, gold, coalesce(predicted, '(unparsed)') AS predicted, sum(votes)::BIGINT AS samples
FROM sample_votes
GROUP BY ALL
ORDER BY run_id, gold, predicted;

-- name: pair_stats
-- Per pair of one run: counts, majority vote and pass@k for k = 1..n (a list, index k-1).
SELECT pair_id, gold, n, c, c_any, parsed, majority, coalesce(majority = gold, false) AS majority_correct,
       list_transform(range(1, n + 1), lambda k: pass_at_k(n, c_any, k)) AS pass_at_k
FROM pair_counts
WHERE run_id = $run
ORDER BY pair_id;

-- name: runs
SELECT r.run_id, r.name, r.role, r.model, r.backend, r.prompt_name, r.prompt_hash, r.status,
       r.started_at, count(s.sample_id) AS samples,
       coalesce(try_cast(json_extract_string(r.params, '$.explain_gold') AS BOOLEAN), false) AS gold_shown
FROM runs r LEFT JOIN samples s USING (run_id)
GROUP BY ALL
ORDER BY r.started_at, r.run_id;

-- name: run_pairs
SELECT count(*) FROM pair_counts WHERE run_id = $run;

-- name: teacher_quality
-- Intrinsic quality of teacher runs (no gold needed): cut at max_tokens, one word n-gram repeated more
-- than $max_repeats times, all five steps present and non-empty, judgement contradicting the label, mean
-- step length, and clean parses (ok: Label: line in place, five titled steps). Measured on a seeded
-- sample of at most $max_samples answers per run (the repetition check reads every text), `of` of them.
WITH picked AS (
    SELECT s.*, count(*) OVER (PARTITION BY s.run_id) AS total
    FROM samples s JOIN runs r USING (run_id)
    WHERE r.role = 'teacher' AND list_contains($runs::VARCHAR[], s.run_id)
    QUALIFY row_number() OVER (PARTITION BY s.run_id ORDER BY hash(s.sample_id), s.sample_id) <= $max_samples
), s AS (
    SELECT s.run_id, s.total, s.parse_status, s.consistent, s.predicted_label, c.finish_reason, c.text,
           list_filter(from_json(CAST(s.steps AS VARCHAR), '[{"name": "VARCHAR", "text": "VARCHAR"}]'),
                       lambda x: trim(coalesce(x.text, '')) <> '') AS steps
    FROM picked s LEFT JOIN completions c ON c.request_key = s.sample_id
)
SELECT run_id, count(*) AS samples, any_value(total) AS of,
       avg(coalesce(finish_reason = 'length', false)::INTEGER) AS truncation_rate,
       avg(coalesce(max_ngram_repeats(text, $ngram) > $max_repeats, false)::INTEGER) AS repetition_rate,
       avg((len(list_distinct(list_transform(steps, lambda x: x.name))) >= 5)::INTEGER) AS steps_present_rate,
       avg((NOT consistent)::INTEGER) FILTER (WHERE predicted_label IS NOT NULL) AS contradiction_rate,
       avg(list_avg(list_transform(steps, lambda x: length(x.text)))) AS mean_step_chars,
       avg((parse_status = 'ok')::INTEGER) AS clean_rate
FROM s
GROUP BY run_id
ORDER BY run_id;

-- name: has_judge
-- Whether the store has the step judge's tables (a store opened read-only before migration 007 lacks them).
SELECT count(*) FROM information_schema.tables WHERE table_name = 'judge_step_labels';

-- name: judged_wrong
-- Steps of each teacher run's answers the step judge graded (its latest verdict per step), and how many wrong.
SELECT s.run_id, count(*) AS judged_steps, count(*) FILTER (WHERE NOT j.correct) AS wrong_steps
FROM judge_step_labels j JOIN samples s USING (sample_id)
WHERE list_contains($runs::VARCHAR[], s.run_id)
GROUP BY s.run_id;
