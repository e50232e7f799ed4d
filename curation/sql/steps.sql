-- name: candidates
-- Samples (any run) with a reviewer's step mark or a judge verdict (hybrid_step_labels: the mark wins),
-- steps as reviews leave them.
SELECT e.sample_id, e.pair_id, e.query_id, e.gold, e.steps, e.decision, e.draw,
       list(struct_pack(i := h.step_index, ok := h.correct, source := h.source)) AS marks
FROM eff e JOIN hybrid_step_labels h ON h.sample_id = e.sample_id
GROUP BY ALL
ORDER BY e.sample_id;

-- name: create_rows
CREATE OR REPLACE TEMP TABLE rows_steps AS
SELECT r.*, coalesce(s.difficulty, 'unknown') AS difficulty, coalesce(s.stage, p.unknown_stage) AS stage
FROM steps_arrow r CROSS JOIN selection_params p LEFT JOIN pair_stage s ON s.pair_id = r.pair_id;
