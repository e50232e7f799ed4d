-- What annotators decided, after supersession: reviews are append-only; an `undo` row names the
-- review it cancels in `reason`; the latest live decision per target wins, across annotators.
CREATE VIEW live_reviews AS
SELECT r.* FROM reviews r
WHERE r.action <> 'undo'
  AND r.review_id NOT IN (SELECT u.reason FROM reviews u WHERE u.action = 'undo');

-- Latest accept / reject / edit per sample (edit carries the full corrected answer text).
CREATE VIEW sample_decisions AS
SELECT * FROM live_reviews
WHERE sample_id IS NOT NULL AND action IN ('accept', 'reject', 'edit')
QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY created_at DESC, review_id DESC) = 1;

-- Latest relabel per pair: the new gold label.
CREATE VIEW pair_relabels AS
SELECT pair_id, new_label, annotator, reason, created_at FROM live_reviews
WHERE action = 'relabel'
QUALIFY row_number() OVER (PARTITION BY pair_id ORDER BY created_at DESC, review_id DESC) = 1;

-- Latest mark per (sample, step): step-level labels for the steps dataset.
CREATE VIEW step_marks AS
SELECT sample_id, step_index, step_correct, annotator, created_at FROM live_reviews
WHERE action = 'step'
QUALIFY row_number() OVER (PARTITION BY sample_id, step_index ORDER BY created_at DESC, review_id DESC) = 1;

-- Gold label after reviews: a relabel wins over the ingested label.
CREATE VIEW gold_pairs AS
SELECT p.* REPLACE (coalesce(r.new_label, p.label) AS label), r.new_label IS NOT NULL AS relabelled
FROM pairs p LEFT JOIN pair_relabels r USING (pair_id);
