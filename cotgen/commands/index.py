"""Placeholder: filled in by the index work (see the issues)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
STAGES: list = []


def register(root: typer.Typer) -> None:
    """Mount this area's commands on the root app."""
