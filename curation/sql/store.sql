-- The store's own checks.

-- name: database_size
SELECT block_size, total_blocks FROM pragma_database_size() WHERE database_name = current_database()
