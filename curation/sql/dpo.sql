-- name: pool
-- Policy answers usable in a preference pair, one per distinct text and side: `good` ones (right label,
-- clean parse, consistent) may be chosen; wrong-label ones (unparsed included) may be rejected.
-- Texts stay in the store; only their hashes travel until the pairs are fixed.
CREATE OR REPLACE TEMP TABLE dpo_pool AS
WITH pol AS (
    SELECT e.sample_id, e.pair_id, e.draw,
           coalesce(e.predicted = e.gold AND e.parse_status = 'ok' AND e.consistent, false) AS good,
           e.predicted IS DISTINCT FROM e.gold AS wrong,
           md5(coalesce(e.edited_text, c.text)) AS text_md5
    FROM eff e LEFT JOIN completions c ON c.request_key = e.sample_id
    WHERE e.from_policy AND trim(coalesce(e.edited_text, c.text, '')) <> ''
)
SELECT sample_id, pair_id, draw, good, text_md5,
       row_number() OVER (PARTITION BY pair_id, good ORDER BY draw) - 1 AS r
FROM (SELECT * FROM pol WHERE good OR wrong
      QUALIFY row_number() OVER (PARTITION BY pair_id, good, text_md5 ORDER BY draw) = 1);

-- name: groups
-- Each pair's case: mixed (a clean right and a wrong answer), all_wrong (no right label at all),
-- unclean (right labels, none clean, some wrong), all_right (nothing wrong).
CREATE OR REPLACE TEMP TABLE dpo_groups AS
WITH sides AS (
    SELECT pair_id, count(*) FILTER (WHERE predicted = gold) AS n_right FROM eff WHERE from_policy GROUP BY pair_id
), pool AS (
    SELECT pair_id, count(*) FILTER (WHERE good) AS n_good, count(*) FILTER (WHERE NOT good) AS n_wrong
    FROM dpo_pool GROUP BY pair_id
)
SELECT s.pair_id, s.n_right, coalesce(p.n_good, 0) AS n_good, coalesce(p.n_wrong, 0) AS n_wrong,
       CASE WHEN coalesce(p.n_wrong, 0) = 0 THEN 'all_right'
            WHEN coalesce(p.n_good, 0) > 0 THEN 'mixed'
            WHEN s.n_right = 0 THEN 'all_wrong'
            ELSE 'unclean' END AS kind
FROM sides s LEFT JOIN pool p USING (pair_id);

-- name: mixed
-- Up to `cap` pairs per prompt: the i-th chosen with the i-th rejected, the shorter side cycling.
CREATE OR REPLACE TEMP TABLE dpo_pairs AS
WITH m AS (
    SELECT pair_id, n_good, n_wrong, unnest(range(least($cap, greatest(n_good, n_wrong)))) AS i
    FROM dpo_groups WHERE kind = 'mixed'
)
SELECT m.pair_id, ch.sample_id AS chosen_id, rj.sample_id AS rejected_id, 'policy' AS chosen_from
FROM m
JOIN dpo_pool ch ON ch.pair_id = m.pair_id AND ch.good AND ch.r = m.i % m.n_good
JOIN dpo_pool rj ON rj.pair_id = m.pair_id AND NOT rj.good AND rj.r = m.i % m.n_wrong
WHERE ch.text_md5 <> rj.text_md5;

-- name: wanted
-- Pairs the teacher's answer rescues: wrong answers and no clean right one.
INSERT INTO wanted_pairs SELECT pair_id FROM dpo_groups WHERE kind IN ('all_wrong', 'unclean');

-- name: teacher
INSERT INTO dpo_pairs
SELECT w.pair_id, t.sample_id, w.sample_id, 'teacher'
FROM dpo_pool w
JOIN dpo_groups g ON g.pair_id = w.pair_id AND g.kind IN ('all_wrong', 'unclean')
JOIN best_teacher t ON t.pair_id = w.pair_id
WHERE NOT w.good AND w.r < $cap AND md5(t.completion) <> w.text_md5;

-- name: rows
CREATE OR REPLACE TEMP TABLE rows_dpo AS
SELECT d.pair_id, g.query_id, g.label, d.chosen_from,
       d.chosen_id AS chosen_sample_id, d.rejected_id AS rejected_sample_id,
       CASE WHEN d.chosen_from = 'teacher' THEN t.completion ELSE coalesce(ec.text, cc.text) END AS chosen_text,
       coalesce(er.text, cr.text) AS rejected_text,
       coalesce(s.difficulty, 'unknown') AS difficulty, coalesce(s.stage, p.unknown_stage) AS stage,
       md5(p.seed || ':' || d.chosen_id || ':' || d.rejected_id) AS draw
FROM dpo_pairs d
CROSS JOIN selection_params p
JOIN gold_pairs g ON g.pair_id = d.pair_id
LEFT JOIN best_teacher t ON d.chosen_from = 'teacher' AND t.sample_id = d.chosen_id
LEFT JOIN completions cc ON cc.request_key = d.chosen_id
LEFT JOIN edits ec ON ec.sample_id = d.chosen_id
LEFT JOIN completions cr ON cr.request_key = d.rejected_id
LEFT JOIN edits er ON er.sample_id = d.rejected_id
LEFT JOIN pair_stage s ON s.pair_id = d.pair_id;

-- name: counts
SELECT kind, count(*) AS pairs FROM dpo_groups GROUP BY kind ORDER BY kind;

-- name: row_counts
SELECT chosen_from, count(*) AS rows, count(DISTINCT pair_id) AS pairs FROM rows_dpo GROUP BY chosen_from ORDER BY chosen_from;
