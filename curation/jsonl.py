"""Read JSON Lines one object at a time; a bad line is a one-line error naming the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import CotgenError, not_utf8


def json_objects(path: Path, shown: Path | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; errors name `shown` (default: `path`)."""
    name = shown or path
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise not_utf8(name, n, raw[e.start]) from None
            if not line.strip():
                continue
            try:
                data = json.loads(line.rstrip())
            except json.JSONDecodeError as e:
                raise CotgenError(f"{name}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(data, dict):
                raise CotgenError(f"{name}:{n}: expected a JSON object, got {type(data).__name__}")
            yield n, data
