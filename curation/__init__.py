"""The DuckDB store, ingest, pass@N statistics, difficulty, selection, review and export."""
