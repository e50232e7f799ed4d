-- The tables of DESIGN.md. Big tables carry no PRIMARY KEY: DuckDB keeps ART indexes in memory,
-- so uniqueness of pair_id is enforced by anti-joins at insert time instead.
CREATE TABLE pairs (
    pair_id      VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,
    query_id     VARCHAR NOT NULL,
    query        VARCHAR NOT NULL,
    title        VARCHAR NOT NULL,
    description  VARCHAR NOT NULL DEFAULT '',
    attributes   JSON,
    raw_label    VARCHAR NOT NULL,
    label        VARCHAR NOT NULL,
    scheme       VARCHAR NOT NULL,
    ingest_id    VARCHAR NOT NULL,
    source_row   BIGINT NOT NULL
);

-- Same pair seen with different gold labels: all labels kept, the first one stays gold.
CREATE TABLE label_disagreements (
    pair_id     VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    label       VARCHAR NOT NULL,
    raw_label   VARCHAR NOT NULL,
    n_rows      BIGINT NOT NULL,
    ingest_id   VARCHAR NOT NULL
);

CREATE TABLE ingests (
    ingest_id    VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,
    path         VARCHAR NOT NULL,
    file_sha256  VARCHAR NOT NULL,
    scheme       VARCHAR NOT NULL,
    rows_read    BIGINT NOT NULL,
    added        BIGINT NOT NULL,
    already_present BIGINT NOT NULL,
    duplicates   BIGINT NOT NULL,
    conflicts    BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE runs (
    run_id       VARCHAR PRIMARY KEY,
    name         VARCHAR NOT NULL,
    role         VARCHAR NOT NULL,
    backend      VARCHAR NOT NULL,
    model        VARCHAR NOT NULL,
    prompt_name  VARCHAR NOT NULL,
    prompt_hash  VARCHAR NOT NULL,
    params       JSON,
    status       VARCHAR NOT NULL,
    summary      JSON,
    started_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    finished_at  TIMESTAMP
);

-- Raw LLM output keyed by a hash of the full request: a re-run never calls the model twice.
CREATE TABLE completions (
    request_key   VARCHAR PRIMARY KEY,
    run_id        VARCHAR NOT NULL,
    pair_id       VARCHAR NOT NULL,
    sample_index  INTEGER NOT NULL,
    request       JSON,
    text          VARCHAR NOT NULL,
    finish_reason VARCHAR,
    tokens_in     INTEGER,
    tokens_out    INTEGER,
    logprobs      JSON,
    latency_s     DOUBLE,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE samples (
    sample_id        VARCHAR PRIMARY KEY,
    run_id           VARCHAR NOT NULL,
    pair_id          VARCHAR NOT NULL,
    sample_index     INTEGER NOT NULL,
    steps            JSON,
    predicted_label  VARCHAR,
    label_probs      JSON,
    parse_status     VARCHAR NOT NULL,
    parse_reason     VARCHAR NOT NULL DEFAULT '',
    consistent       BOOLEAN NOT NULL DEFAULT true,
    correct          BOOLEAN,
    created_at       TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Append-only: the latest decision per target supersedes, the history stays.
CREATE TABLE reviews (
    review_id    VARCHAR PRIMARY KEY,
    annotator    VARCHAR NOT NULL,
    action       VARCHAR NOT NULL,
    pair_id      VARCHAR NOT NULL,
    sample_id    VARCHAR,
    step_index   INTEGER,
    step_correct BOOLEAN,
    reason       VARCHAR NOT NULL DEFAULT '',
    new_label    VARCHAR,
    edited_text  VARCHAR,
    note         VARCHAR NOT NULL DEFAULT '',
    seconds      DOUBLE,
    created_at   TIMESTAMP NOT NULL
);

CREATE TABLE dataset_versions (
    name          VARCHAR NOT NULL,
    version       INTEGER NOT NULL,
    content_hash  VARCHAR NOT NULL,
    parent        INTEGER,
    path          VARCHAR NOT NULL,
    manifest      JSON NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (name, version)
);
