-- Difficulty per (pair, run) from the correct count c of n samples against the gold label after reviews.
-- `cotgen curate difficulty` replaces a run's rows as a whole, so the table always shows one computation
-- per run, with the bins (gamma, easy) it used and a fingerprint of its inputs (the run's samples and
-- the reviews), so an export can tell whether the rows are still current and reuse them.
CREATE TABLE pair_difficulty (
    run_id       VARCHAR NOT NULL,
    pair_id      VARCHAR NOT NULL,
    n            INTEGER NOT NULL,
    c            INTEGER NOT NULL,
    difficulty   VARCHAR NOT NULL,
    gamma        DOUBLE NOT NULL,
    easy         DOUBLE NOT NULL,
    inputs       VARCHAR NOT NULL DEFAULT '',
    computed_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
