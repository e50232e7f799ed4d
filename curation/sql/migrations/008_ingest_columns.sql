-- Each ingest records the column mapping it used (detected or given) and how many NUL bytes it removed.
ALTER TABLE ingests ADD COLUMN columns JSON;
ALTER TABLE ingests ADD COLUMN nul_bytes_removed BIGINT NOT NULL DEFAULT 0;
