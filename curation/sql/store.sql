-- The store's own checks.

-- name: database_size
SELECT block_size, used_blocks FROM pragma_database_size() WHERE database_name = current_database()

-- name: has_schema_version
SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'

-- name: applied_versions
SELECT version FROM schema_version

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version
    (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp)

-- name: record_migration
INSERT INTO schema_version (version, name) VALUES (?, ?)
