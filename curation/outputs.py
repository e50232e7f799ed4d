"""Files the user names for output (`-o FILE`, rejects files): checked first, written whole or not at all."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from schemas.errors import CotgenError


def prepare_output(path: Path) -> list[Path]:
    """Check that `path` can be written as a file and create its missing folders; returns those, outermost first."""
    if path.is_dir():
        raise CotgenError(f"{path}: a directory; give a file path, e.g. {path / 'reviews.jsonl'}")
    if path.exists() and not path.is_file():
        raise CotgenError(f"{path}: not a regular file; give a file path")
    missing = [p for p in [*reversed(path.parent.parents), path.parent] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CotgenError(f"{e.filename or path.parent}: cannot create the folder for {path.name} ({e.strerror})") from None
    return missing


def write_text_atomic(path: Path, text: str) -> list[Path]:
    """Write `text` (UTF-8) through a staged file beside `path`, swapped in at once; returns the folders created."""
    created = prepare_output(path)
    staged = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        staged.write_text(text, encoding="utf-8")
        staged.replace(path)
    except OSError as e:
        raise CotgenError(f"{path}: cannot write it ({e.strerror})") from None
    finally:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)
    return created
