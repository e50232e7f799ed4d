-- name: delete
-- A run's difficulty is recomputed as a whole (reviews may have changed gold labels since).
DELETE FROM pair_difficulty WHERE list_contains($runs::VARCHAR[], run_id);

-- name: insert
INSERT INTO pair_difficulty (run_id, pair_id, n, c, difficulty, gamma, easy)
SELECT run_id, pair_id, n, c, difficulty_bin(n, c, $gamma, $easy), $gamma, $easy
FROM pair_counts
WHERE list_contains($runs::VARCHAR[], run_id);

-- name: summary
SELECT d.run_id, r.name, d.difficulty, count(*) AS pairs
FROM pair_difficulty d JOIN runs r USING (run_id)
WHERE list_contains($runs::VARCHAR[], d.run_id)
GROUP BY ALL
ORDER BY r.name, d.difficulty;
