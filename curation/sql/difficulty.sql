-- name: delete
-- A run's difficulty is recomputed as a whole (reviews may have changed gold labels since).
DELETE FROM pair_difficulty WHERE list_contains($runs::VARCHAR[], run_id);

-- name: insert
INSERT INTO pair_difficulty (run_id, pair_id, n, c, difficulty, gamma, easy, inputs)
SELECT run_id, pair_id, n, c, difficulty_bin(n, c, $gamma, $easy), $gamma, $easy, $inputs
FROM pair_counts
WHERE run_id = $run;

-- name: fingerprint
-- What a run's difficulty depends on: its samples' parsed labels and the reviews (a relabel moves c), and
-- what c counts (clean right answers since the strict parser; older rows counted partial ones too).
SELECT 'clean:' || (SELECT count(*) || ':' || coalesce(sum(hash(sample_id, predicted_label, parse_status)), 0)
        FROM samples WHERE run_id = $run)
       || '|' || (SELECT count(*) || ':' || coalesce(sum(hash(review_id)), 0) FROM reviews);

-- name: has_table
SELECT count(*) FROM information_schema.columns WHERE table_name = 'pair_difficulty' AND column_name = 'inputs';

-- name: current
-- Stored rows still describe the run: same inputs, same bins.
SELECT count(*) FROM pair_difficulty WHERE run_id = $run AND inputs = $inputs AND gamma = $gamma AND easy = $easy;

-- name: reuse
-- pair_counts (the columns later steps read) from the stored rows instead of the samples.
CREATE OR REPLACE TEMP TABLE pair_counts AS
SELECT run_id, pair_id, n, c FROM pair_difficulty WHERE run_id = $run;

-- name: summary
SELECT d.run_id, r.name, d.difficulty, count(*) AS pairs
FROM pair_difficulty d JOIN runs r USING (run_id)
WHERE list_contains($runs::VARCHAR[], d.run_id)
GROUP BY ALL
ORDER BY r.name, d.difficulty;
