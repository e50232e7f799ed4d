-- The generative step judge (TaoSR-SHE). A judge run grades the steps of stored CoT samples; one judgement
-- per judge request (keyed like generation: same model, messages and params, same key, judged once per
-- store), one verdict per (sample, step, judge run). Human step marks stay in `reviews` (view step_marks).
CREATE TABLE judge_runs (
    judge_run_id  VARCHAR PRIMARY KEY,
    name          VARCHAR NOT NULL,
    samples_role  VARCHAR NOT NULL,  -- whose CoTs it judges: teacher | policy
    backend       VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    prompt_name   VARCHAR NOT NULL,
    prompt_hash   VARCHAR NOT NULL,
    params        JSON,
    status        VARCHAR NOT NULL,
    summary       JSON,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP
);

CREATE TABLE judgements (
    judge_key     VARCHAR PRIMARY KEY,
    judge_run_id  VARCHAR NOT NULL,
    sample_id     VARCHAR NOT NULL,
    pair_id       VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    prompt_hash   VARCHAR NOT NULL,
    text          VARCHAR NOT NULL,
    status        VARCHAR NOT NULL,  -- ok | partial | failed | empty (cotgen.judge)
    note          VARCHAR NOT NULL DEFAULT '',
    first_wrong   INTEGER,           -- 0-based index of the first step judged incorrect
    finish_reason VARCHAR,
    tokens_in     INTEGER,
    tokens_out    INTEGER,
    latency_s     DOUBLE,
    attempts      INTEGER,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE step_verdicts (
    judge_run_id  VARCHAR NOT NULL,
    sample_id     VARCHAR NOT NULL,
    step_index    INTEGER NOT NULL,  -- 0-based, as reviews.step_index
    step_name     VARCHAR NOT NULL,
    correct       BOOLEAN,           -- NULL: the judge gave no verdict for this step
    reason        VARCHAR NOT NULL DEFAULT '',
    model         VARCHAR NOT NULL,
    prompt_hash   VARCHAR NOT NULL,
    judge_key     VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- The judge's label of a step: the verdict of the newest judge run that gave one.
CREATE VIEW judge_step_labels AS
SELECT v.sample_id, v.step_index, v.step_name, v.correct, v.reason, v.judge_run_id, v.model, v.prompt_hash
FROM step_verdicts v JOIN judge_runs r USING (judge_run_id)
WHERE v.correct IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY v.sample_id, v.step_index
                           ORDER BY r.started_at DESC, v.created_at DESC, v.judge_run_id DESC) = 1;

-- The hybrid label of a step: a human mark wins, else the judge's verdict; a step with neither has no row.
CREATE VIEW hybrid_step_labels AS
SELECT coalesce(m.sample_id, j.sample_id) AS sample_id, coalesce(m.step_index, j.step_index) AS step_index,
       coalesce(m.step_correct, j.correct) AS correct,
       CASE WHEN m.step_correct IS NOT NULL THEN 'human' ELSE 'judge' END AS source
FROM (SELECT * FROM step_marks WHERE step_correct IS NOT NULL) m
FULL OUTER JOIN judge_step_labels j ON j.sample_id = m.sample_id AND j.step_index = m.step_index;
