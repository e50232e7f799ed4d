"""Where a CSV/TSV file is malformed, for the error message: polars says what went wrong but not on which row.

These run only after polars has failed, so their one pass in Python costs nothing on the good path.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from schemas.errors import CotgenError

_SNIFF_BYTES = 4096
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class _Lines:
    """The file's lines for csv.reader, noting whether the last one ended in a bare CR."""

    def __init__(self, fh: TextIO):
        self.fh = fh
        self.bare_cr = False

    def __iter__(self) -> Iterator[str]:
        for line in self.fh:
            self.bare_cr = line.endswith("\r")
            yield line


def locate_bad_row(path: Path, shown: str, separator: str = ",") -> None:
    """Raise the one-line error naming the first malformed row of a UTF-8 CSV/TSV (rows counted from the header, 1).

    Finds rows with more or fewer fields than the header, a row ended by a bare CR and a quote never closed;
    returns quietly when it finds none of these.
    """
    kind = "TSV" if separator == "\t" else "CSV"

    def bad(row: int, what: str) -> CotgenError:
        return CotgenError(f"{shown}:{row}: malformed {kind}: {what}")

    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        lines = _Lines(fh)
        reader = csv.reader(lines, delimiter=separator, strict=True)
        row, width = 1, None
        try:
            for fields in reader:
                if lines.bare_cr:
                    raise bad(row, "the row ends in a bare CR (old Mac line ends); save it with LF or CRLF line ends")
                if width is None:
                    width = len(fields)
                elif fields and len(fields) != width:
                    raise bad(row, f"{len(fields)} fields where the header has {width}")
                row += 1
        except csv.Error as e:
            what = "a quoted field is never closed" if "unexpected end of data" in str(e) else str(e)
            raise bad(row, what) from None


def not_text(path: Path) -> str | None:
    """Why the start of `path` is not UTF-8 text (a UTF-16 mark, NUL bytes), or None when it may be."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith(_UTF16_BOMS):
        return "starts with a UTF-16 byte-order mark; pass --encoding utf-16"
    if b"\0" in head:
        return "holds NUL bytes: not a text file (or UTF-16/32 text: pass --encoding)"
    return None
