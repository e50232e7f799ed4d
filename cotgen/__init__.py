"""Prompts, LLM backends, pass@N sampling and CoT parsing; `cotgen.cli` is the application root."""

__version__ = "0.1.0"
