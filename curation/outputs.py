"""Files the user names for output (`-o FILE`, rejects files): checked first, written whole or not at all;
and private scratch folders under the workspace, which a killed run does not leave behind for long."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from schemas.errors import CotgenError

SCRATCH = Path(".cotgen") / "tmp"  # a workspace's private working folders, relative to its root


def prepare_output(path: Path) -> list[Path]:
    """Check that `path` can be written as a file and create its missing folders; returns those, outermost first."""
    if path.is_dir():
        raise CotgenError(f"{path}: a directory; give a file path, e.g. {path / 'reviews.jsonl'}")
    if path.exists() and not path.is_file():
        raise CotgenError(f"{path}: not a regular file; give a file path")
    chain = [*reversed(path.parent.parents), path.parent]
    missing = [p for p in chain if not p.exists()]
    blocker = next((p for p in chain if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise CotgenError(f"{blocker}: a file where a folder should be, for {path}")
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


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (someone else's process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


@contextlib.contextmanager
def scratch_dir(root: Path, prefix: str) -> Iterator[Path]:
    """A private folder `root/PREFIX-PID-XXXX`, removed on exit; first removes those whose process is gone."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{prefix}-*"):
        pid = old.name[len(prefix) + 1:].partition("-")[0]
        if not pid_alive(int(pid) if pid.isdigit() else 0):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
