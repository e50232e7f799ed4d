"""The one exception type the CLI turns into a one-line message, and the input check every reader shares."""

from pathlib import Path


class CotgenError(Exception):
    """A user-facing error: bad input, bad config, a locked store. Printed without a traceback."""


def not_utf8(path: Path, line: int, byte: int) -> CotgenError:
    """The one message for a text file that is not UTF-8: which line, which byte."""
    return CotgenError(f"{path}:{line}: not UTF-8 (byte 0x{byte:02x}); save the file as UTF-8")


def read_text(path: Path) -> str:
    """A whole UTF-8 file as text; a byte that is not UTF-8 is a one-line error naming its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(path, data.count(b"\n", 0, e.start) + 1, data[e.start]) from None


def require_file(path: Path, hint: str = "") -> None:
    """A one-line error unless `path` is a regular file; `hint` says what the file should hold."""
    if not path.is_file():
        what = ("a directory, not a file" if path.is_dir() else "not a regular file" if path.exists()
                else "a symlink loop or a link to nothing" if path.is_symlink() else "no such file")
        raise CotgenError(f"{path}: {what}{hint}")
