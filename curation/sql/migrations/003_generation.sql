-- Generation: a sample's id is its request key (= completions.request_key). Samples keep the rule ids
-- their teacher prompt was given (reviewers see them) and the gold label they were scored against at
-- generation time (curation re-scores against relabels). Completions keep how many attempts they took.
ALTER TABLE samples ADD COLUMN rule_ids VARCHAR[];
ALTER TABLE samples ADD COLUMN gold_label VARCHAR;
ALTER TABLE completions ADD COLUMN attempts INTEGER;
