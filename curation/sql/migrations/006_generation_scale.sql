-- Generation at scale. A run lease (holder pid and host, heartbeat): one process writes a run at a time,
-- and a holder that died is seen as such. Completions keep a reasoning teacher's thinking (vLLM/SGLang
-- `reasoning_content`) and its token count. Retrieved rules are stored per pair, keyed by the retrieval
-- fingerprint (index contents, embedder, k and query template), so re-runs and other runs reuse them.
ALTER TABLE runs ADD COLUMN lease_pid INTEGER;
ALTER TABLE runs ADD COLUMN lease_host VARCHAR;
ALTER TABLE runs ADD COLUMN lease_token VARCHAR;
ALTER TABLE runs ADD COLUMN heartbeat_at TIMESTAMP;
ALTER TABLE completions ADD COLUMN reasoning VARCHAR;
ALTER TABLE completions ADD COLUMN tokens_reasoning INTEGER;
CREATE TABLE retrievals (
    fingerprint VARCHAR NOT NULL,
    pair_id     VARCHAR NOT NULL,
    rule_ids    VARCHAR[] NOT NULL,
    scores      FLOAT[] NOT NULL,
    PRIMARY KEY (fingerprint, pair_id)
);
