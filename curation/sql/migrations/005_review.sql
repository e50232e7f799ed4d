-- Review sessions. `reviews` stays append-only; these tables only say who holds which item, which
-- pairs carry a trusted label, and how far each decision journal has been copied into `reviews`.

-- An item handed to an annotator. item_key is the sample id, or 'pair:' || pair_id for a pair shown
-- without a sample. One row per (annotator, item); position orders the annotator's items (resume).
CREATE TABLE review_assignments (
    annotator    VARCHAR NOT NULL,
    item_key     VARCHAR NOT NULL,
    pair_id      VARCHAR NOT NULL,
    sample_id    VARCHAR,
    queue        VARCHAR NOT NULL,
    position     BIGINT NOT NULL,
    overlap      BOOLEAN NOT NULL,
    gold         BOOLEAN NOT NULL,
    assigned_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (annotator, item_key)
);

-- Pairs whose label is trusted (an expert's, or adjudicated): mixed into queues to score annotators.
CREATE TABLE review_gold (
    pair_id     VARCHAR PRIMARY KEY,
    label       VARCHAR NOT NULL,
    added_by    VARCHAR NOT NULL DEFAULT '',
    note        VARCHAR NOT NULL DEFAULT '',
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Bytes of each journal file (reviews/journal/*.jsonl) already copied into `reviews`; advanced in the
-- same transaction as the copy, so a crash between journal and store neither loses nor repeats a row.
CREATE TABLE review_journal_offsets (
    journal      VARCHAR PRIMARY KEY,
    byte_offset  BIGINT NOT NULL,
    updated_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE INDEX reviews_by_annotator ON reviews (annotator);

-- Decisions that finish an item for an annotator (a relabel finishes a pair shown without a sample).
CREATE VIEW review_item_decisions AS
SELECT annotator, coalesce(sample_id, 'pair:' || pair_id) AS item_key, pair_id, sample_id, action, reason,
       new_label, edited_text, seconds, created_at, review_id
FROM live_reviews
WHERE action IN ('accept', 'reject', 'edit', 'skip') OR (action = 'relabel' AND sample_id IS NULL);
