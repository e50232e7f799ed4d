"""The one exception type the CLI turns into a one-line message, and the input check every reader shares."""

from pathlib import Path


class CotgenError(Exception):
    """A user-facing error: bad input, bad config, a locked store. Printed without a traceback."""


def require_file(path: Path, hint: str = "") -> None:
    """A one-line error unless `path` is a regular file; `hint` says what the file should hold."""
    if not path.is_file():
        what = "a directory, not a file" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise CotgenError(f"{path}: {what}{hint}")
