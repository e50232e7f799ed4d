"""Pydantic models, label schemes and the workspace configuration; no I/O beyond parsing."""
