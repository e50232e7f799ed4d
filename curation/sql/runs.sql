-- The store side of generation: run rows and their lease, done keys, batch writes, summaries.

-- name: run_by_name
SELECT run_id, role, backend, model, prompt_name, prompt_hash, params, status,
       lease_pid, lease_host, lease_token, heartbeat_at
FROM runs WHERE name = ?

-- name: insert_run
INSERT INTO runs (run_id, name, role, backend, model, prompt_name, prompt_hash, params, status, started_at,
                  lease_pid, lease_host, lease_token, heartbeat_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?::JSON, 'running', ?, ?, ?, ?, ?)

-- name: resume_run
UPDATE runs SET status = 'running', params = ?::JSON, finished_at = NULL,
                lease_pid = ?, lease_host = ?, lease_token = ?, heartbeat_at = ?
WHERE run_id = ?

-- name: heartbeat
UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND lease_token = ? RETURNING run_id

-- name: finish_run
-- Only by the lease holder: a process whose run was taken over must not end the new holder's run.
UPDATE runs SET status = ?, summary = ?::JSON, finished_at = ?,
                lease_pid = NULL, lease_host = NULL, lease_token = NULL, heartbeat_at = NULL
WHERE run_id = ? AND lease_token = ?

-- name: complete_pairs
SELECT pair_id FROM samples WHERE run_id = ? AND sample_index < ?
GROUP BY pair_id HAVING count(DISTINCT sample_index) = ?

-- name: done_keys
SELECT k.key FROM (SELECT unnest(?::VARCHAR[]) AS key) k SEMI JOIN samples s ON s.sample_id = k.key

-- name: done_samples
SELECT s.sample_id, s.pair_id FROM (SELECT unnest(?::VARCHAR[]) AS key) k JOIN samples s ON s.sample_id = k.key

-- name: stored_completions
SELECT c.request_key, c.text, c.reasoning, c.finish_reason, c.logprobs, c.latency_s, c.attempts
FROM (SELECT unnest(?::VARCHAR[]) AS key) k JOIN completions c ON c.request_key = k.key

-- name: insert_completions
INSERT OR IGNORE INTO completions
    (request_key, run_id, pair_id, sample_index, request, text, finish_reason, tokens_in, tokens_out, logprobs,
     latency_s, attempts, reasoning, tokens_reasoning)
SELECT request_key, run_id, pair_id, sample_index, request::JSON, text, finish_reason, tokens_in, tokens_out,
       logprobs::JSON, latency_s, attempts, reasoning, tokens_reasoning
FROM completions_batch

-- name: insert_samples
INSERT OR IGNORE INTO samples
    (sample_id, run_id, pair_id, sample_index, steps, predicted_label, label_probs, parse_status, parse_reason,
     consistent, correct, rule_ids, gold_label)
SELECT sample_id, run_id, pair_id, sample_index, steps::JSON, predicted_label, label_probs::JSON, parse_status,
       parse_reason, consistent, correct, rule_ids, gold_label
FROM samples_batch

-- name: pair_ids
-- The pairs a run generates for, in ingest order. With a limit, the pairs of whole queries drawn in a seeded
-- random order, $limit in all (only the last query drawn may be cut): a sample of queries, not the first rows.
WITH picked AS (
    SELECT pair_id, source, source_row
    FROM gold_pairs
    WHERE ($source::VARCHAR IS NULL OR source = $source)
    ORDER BY md5(query_id || ':' || $seed::VARCHAR), query_id, source, source_row, pair_id
    LIMIT $limit
)
SELECT pair_id FROM picked ORDER BY source, source_row, pair_id

-- name: pairs_by_id
SELECT g.pair_id, g.source, g.query_id, g.query, g.title, g.description, g.attributes, g.raw_label, g.label, g.scheme
FROM (SELECT unnest(?::VARCHAR[]) AS key) k JOIN gold_pairs g ON g.pair_id = k.key

-- name: stored_retrievals
SELECT r.pair_id, r.rule_ids, r.scores
FROM (SELECT unnest(?::VARCHAR[]) AS key) k JOIN retrievals r ON r.pair_id = k.key
WHERE r.fingerprint = ?

-- name: insert_retrievals
INSERT OR IGNORE INTO retrievals SELECT fingerprint, pair_id, rule_ids, scores FROM retrievals_batch

-- name: summary
SELECT count(*) AS samples,
       count(DISTINCT s.pair_id) AS pairs,
       count(*) FILTER (WHERE s.predicted_label IS NOT NULL) AS labelled,
       count(*) FILTER (WHERE s.parse_status = 'ok') AS parsed_ok,
       count(*) FILTER (WHERE NOT s.consistent) AS inconsistent,
       count(*) FILTER (WHERE s.correct) AS correct,
       coalesce(sum(c.tokens_in), 0) AS tokens_in,
       coalesce(sum(c.tokens_out), 0) AS tokens_out,
       coalesce(sum(c.tokens_reasoning), 0) AS tokens_reasoning,
       count(*) FILTER (WHERE c.finish_reason = 'length') AS truncated
FROM samples s LEFT JOIN completions c ON c.request_key = s.sample_id
WHERE s.run_id = ?

-- name: status_counts
SELECT parse_status, count(*) AS n FROM samples WHERE run_id = ? GROUP BY ALL ORDER BY n DESC
