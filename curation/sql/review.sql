-- Review: queues and claims (curation/review/queue.py), the journal copy (journal.py), sessions, import,
-- export and stats. A claim statement is `claimable` with one `candidates_*` statement in its {candidates}.

-- name: claimable
-- Items of the queue this annotator could claim now, in review order: samples of the chosen run(s) with
-- the current gold label (`base`; query_order keeps a query's items together), the queue's candidates,
-- minus live claims and decisions of others (an overlap item, a stable hash share of items below
-- $overlap, goes to two annotators) and minus this annotator's own items.
WITH base AS (
    SELECT s.sample_id AS item_key, s.pair_id, s.sample_id, s.run_id, s.sample_index, s.predicted_label,
           s.parse_status, s.consistent, g.label AS gold, md5($seed || g.query_id) AS query_order
    FROM samples s JOIN runs r USING (run_id) JOIN gold_pairs g USING (pair_id)
    WHERE $run::VARCHAR IS NULL OR r.name = $run
),
cand AS ({candidates}),
held AS (  -- live claims: not expired, not skipped by their holder
    SELECT a.annotator, a.item_key FROM review_assignments a
    ANTI JOIN (SELECT annotator, item_key FROM review_item_decisions WHERE action = 'skip') k
        USING (annotator, item_key)
    WHERE NOT a.gold AND a.assigned_at >= $cutoff
),
takers AS (
    SELECT item_key, count(*) AS n FROM (
        SELECT annotator, item_key FROM review_item_decisions WHERE action <> 'skip'
        UNION SELECT annotator, item_key FROM held
    ) GROUP BY item_key
),
mine AS (
    SELECT item_key FROM review_assignments WHERE annotator = $annotator
    UNION SELECT item_key FROM review_item_decisions WHERE annotator = $annotator
),
shared AS (
    SELECT c.*, (('0x' || substr(md5('overlap:' || c.item_key), 1, 8))::UBIGINT / 4294967296.0) < $overlap AS overlap
    FROM cand c
)
SELECT c.item_key, c.pair_id, c.sample_id, c.overlap
FROM shared c LEFT JOIN takers t USING (item_key) ANTI JOIN mine m USING (item_key)
WHERE coalesce(t.n, 0) < CASE WHEN c.overlap THEN 2 ELSE 1 END
ORDER BY c.k1, c.k2, c.k3, c.k4, c.item_key

-- name: claim
{claimable}
LIMIT $k

-- name: claimable_count
SELECT count(*) FROM ({claimable})

-- Per queue: the SELECT of (item_key, pair_id, sample_id, k1..k4 sort keys) over `base`.

-- name: candidates_disagreements
-- Model and gold disagree, or the source itself gave the pair conflicting labels.
SELECT item_key, pair_id, sample_id, 0.0 AS k1, query_order AS k2, pair_id AS k3, sample_index AS k4 FROM base
WHERE (predicted_label IS NOT NULL AND predicted_label <> gold)
   OR pair_id IN (SELECT pair_id FROM label_disagreements)
UNION ALL
SELECT 'pair:' || g.pair_id, g.pair_id, NULL, 0.0, md5($seed || g.query_id), g.pair_id, 0 FROM gold_pairs g
WHERE g.pair_id IN (SELECT pair_id FROM label_disagreements) AND g.pair_id NOT IN (SELECT pair_id FROM base)

-- name: candidates_hard
-- TaoSR1's hard bin per (pair, run): 0 < c <= gamma * n correct samples; the rarest successes first.
SELECT b.item_key, b.pair_id, b.sample_id, per.c / per.n AS k1, b.query_order AS k2, b.pair_id AS k3,
       b.sample_index AS k4
FROM base b
JOIN (SELECT pair_id, run_id, count_if(predicted_label = gold) AS c, count(*) AS n FROM base GROUP BY ALL) per
    USING (pair_id, run_id)
WHERE per.c > 0 AND per.c <= $gamma * per.n

-- name: candidates_parse_failures
SELECT item_key, pair_id, sample_id,
       CASE parse_status WHEN 'error' THEN 0 WHEN 'empty' THEN 1 WHEN 'no_label' THEN 2 ELSE 3 END::DOUBLE AS k1,
       query_order AS k2, pair_id AS k3, sample_index AS k4
FROM base WHERE parse_status <> 'ok'

-- name: candidates_contradictions
-- The judgement step names another grade than the final label.
SELECT item_key, pair_id, sample_id, 0.0 AS k1, query_order AS k2, pair_id AS k3, sample_index AS k4
FROM base WHERE NOT consistent

-- name: candidates_judge_disagreements
-- The step judge (its latest verdicts) against a reviewer's step marks first, then against the sample's
-- own label: the right label with a step judged wrong, then a wrong label with every judged step right.
WITH judged AS (
    SELECT j.sample_id, bool_or(NOT j.correct) AS any_wrong,
           bool_or(coalesce(m.step_correct <> j.correct, false)) AS vs_human
    FROM judge_step_labels j
    LEFT JOIN step_marks m ON m.sample_id = j.sample_id AND m.step_index = j.step_index
    GROUP BY j.sample_id
)
SELECT b.item_key, b.pair_id, b.sample_id,
       CASE WHEN j.vs_human THEN 0 WHEN b.predicted_label = b.gold THEN 1 ELSE 2 END::DOUBLE AS k1,
       b.query_order AS k2, b.pair_id AS k3, b.sample_index AS k4
FROM base b JOIN judged j USING (sample_id)
WHERE j.vs_human OR (b.predicted_label = b.gold AND j.any_wrong)
   OR (b.predicted_label IS DISTINCT FROM b.gold AND NOT j.any_wrong)

-- name: candidates_random
SELECT item_key, pair_id, sample_id, 0.0 AS k1, md5($seed || item_key) AS k2, pair_id AS k3, sample_index AS k4
FROM base

-- name: candidates_ids
-- Ids from a file (registered as review_ids), in file order: a sample id, or a pair id (its samples, or
-- the pair alone).
SELECT b.item_key, b.pair_id, b.sample_id, min(i.pos)::DOUBLE AS k1, '' AS k2, b.pair_id AS k3,
       b.sample_index AS k4
FROM base b JOIN review_ids i ON i.id = b.sample_id OR i.id = b.pair_id
GROUP BY ALL
UNION ALL
SELECT 'pair:' || p.pair_id, p.pair_id, NULL, i.pos::DOUBLE, '', p.pair_id, 0
FROM pairs p JOIN review_ids i ON i.id = p.pair_id
WHERE p.pair_id NOT IN (SELECT pair_id FROM base)

-- name: gold_items
-- Gold pairs this annotator has not had, each shown with one sample of the chosen run(s) when there is one.
WITH pick AS (
    SELECT s.pair_id, arg_min(s.sample_id, md5($seed || s.sample_id)) AS sample_id
    FROM samples s JOIN runs r USING (run_id)
    WHERE ($run::VARCHAR IS NULL OR r.name = $run) AND s.pair_id IN (SELECT pair_id FROM review_gold)
    GROUP BY s.pair_id
)
SELECT coalesce(p.sample_id, 'pair:' || g.pair_id) AS item_key, g.pair_id, p.sample_id
FROM review_gold g JOIN pairs USING (pair_id) LEFT JOIN pick p USING (pair_id)
WHERE g.pair_id NOT IN (SELECT pair_id FROM review_assignments WHERE annotator = $annotator AND gold)
  AND coalesce(p.sample_id, 'pair:' || g.pair_id) NOT IN
      (SELECT item_key FROM review_assignments WHERE annotator = $annotator)
ORDER BY md5($seed || $annotator || g.pair_id)
LIMIT $n

-- name: my_counts
SELECT coalesce(count_if(gold), 0), coalesce(count_if(NOT gold), 0), coalesce(max(position), 0)
FROM review_assignments WHERE annotator = $annotator

-- name: insert_assignment
INSERT INTO review_assignments (annotator, item_key, pair_id, sample_id, queue, position, overlap, gold, assigned_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: unfinished
SELECT item_key FROM review_assignments
WHERE annotator = $annotator AND queue = $queue
  AND item_key NOT IN (SELECT item_key FROM review_item_decisions WHERE annotator = $annotator)
ORDER BY position

-- name: items
-- Card data of the annotator's assigned items.
SELECT a.item_key, a.pair_id, a.sample_id, a.gold, p.query, p.title, p.description, p.attributes, p.label,
       p.scheme, p.source, r.name AS run_name, json_extract_string(r.params, '$.order') AS run_order,
       s.predicted_label, s.label_probs, s.steps, s.parse_status, s.parse_reason, s.consistent, c.text,
       s.rule_ids
FROM review_assignments a
JOIN pairs p USING (pair_id)
LEFT JOIN samples s ON s.sample_id = a.sample_id
LEFT JOIN runs r ON r.run_id = s.run_id
LEFT JOIN completions c ON c.request_key = s.sample_id
WHERE a.annotator = $annotator AND a.item_key IN (SELECT unnest($keys::VARCHAR[]))

-- name: ids_existing
SELECT i.id FROM review_ids i
WHERE i.id IN (SELECT sample_id FROM samples) OR i.id IN (SELECT pair_id FROM pairs)

-- name: gold_upsert
INSERT OR REPLACE INTO review_gold (pair_id, label, added_by, note) VALUES (?, ?, ?, ?)

-- name: gold_count
SELECT count(*) FROM review_gold

-- name: pairs_scheme
SELECT pair_id, scheme FROM pairs WHERE pair_id IN (SELECT unnest(?::VARCHAR[]))

-- name: journal_offsets
SELECT journal, byte_offset FROM review_journal_offsets

-- name: insert_batch
-- First copy of each review_id wins; ids already in the store are skipped (idempotent re-flush).
INSERT INTO reviews (review_id, annotator, action, pair_id, sample_id, step_index, step_correct, reason,
                     new_label, edited_text, note, seconds, created_at)
SELECT review_id, annotator, action, pair_id, sample_id, step_index, step_correct, reason, new_label,
       edited_text, note, seconds, created_at
FROM review_batch b
WHERE b.review_id NOT IN (SELECT review_id FROM reviews)
QUALIFY row_number() OVER (PARTITION BY b.review_id ORDER BY b.seq) = 1

-- name: set_offset
INSERT OR REPLACE INTO review_journal_offsets (journal, byte_offset, updated_at) VALUES (?, ?, now())

-- name: count_reviews
SELECT count(*) FROM reviews

-- name: history
SELECT * FROM reviews WHERE annotator = ? ORDER BY created_at, review_id

-- name: samples_steps
SELECT sample_id, pair_id, json_array_length(steps) FROM samples WHERE sample_id IN (SELECT unnest(?::VARCHAR[]))

-- name: existing_ids
SELECT review_id, action FROM reviews WHERE review_id IN (SELECT unnest(?::VARCHAR[]))

-- name: export_all
SELECT * FROM reviews ORDER BY created_at, review_id

-- name: export_live
SELECT * FROM live_reviews ORDER BY created_at, review_id

-- name: latest_decisions
-- Each annotator's latest finishing decision per item, with the label they stand by for the pair: their own
-- latest relabel, else the ingested label they were shown; whether they relabelled on this item's card;
-- and the trusted label when the pair is gold.
WITH own_relabel AS (
    SELECT annotator, pair_id, new_label FROM live_reviews WHERE action = 'relabel'
    QUALIFY row_number() OVER (PARTITION BY annotator, pair_id ORDER BY created_at DESC, review_id DESC) = 1
),
relabel_cards AS (
    SELECT DISTINCT annotator, coalesce(sample_id, 'pair:' || pair_id) AS item_key FROM live_reviews
    WHERE action = 'relabel'
)
SELECT d.annotator, d.item_key, d.action, d.seconds, coalesce(o.new_label, p.label) AS label,
       rc.item_key IS NOT NULL AS relabelled, s.predicted_label, g.label AS trusted
FROM review_item_decisions d
JOIN pairs p USING (pair_id)
LEFT JOIN own_relabel o USING (annotator, pair_id)
LEFT JOIN relabel_cards rc USING (annotator, item_key)
LEFT JOIN samples s ON s.sample_id = d.sample_id
LEFT JOIN review_gold g USING (pair_id)
QUALIFY row_number() OVER (PARTITION BY d.annotator, d.item_key ORDER BY d.created_at DESC, d.review_id DESC) = 1
ORDER BY d.annotator, d.item_key
