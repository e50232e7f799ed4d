"""Fixtures shared by every area's tests: real data paths, workspaces, the real CLI."""

from __future__ import annotations

import functools
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
COTGEN = [sys.executable, "-m", "cotgen.cli"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests read real data from ../shared/data")
    return SHARED_DATA


def store_rows(ws_root: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of a query against a workspace's store, opened read-only."""
    from curation.store import Store
    from schemas.workspace import Workspace

    with Store(Workspace.open(ws_root).store_path, read_only=True) as store:
        return store.rows(sql, params)


def run_cli(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real `cotgen` CLI in a subprocess; returns the completed process (text mode)."""
    proc = subprocess.run([*COTGEN, *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"cotgen {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess]:
    return run_cli


@pytest.fixture
def example_workspace(tmp_path: Path) -> Path:
    """A fresh workspace made by `cotgen init --example`, with its example pairs ingested."""
    ws = tmp_path / "ws"
    run_cli("init", "--example", str(ws))
    run_cli("ingest", "-w", str(ws))
    return ws


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The bundled SmolLM2 as a plain HF checkpoint (converted once into the cache)."""
    from schemas.models import resolve_model

    return resolve_model("bundled:smollm2-135m-instruct")


# The fast tier (`make test-fast`, `-m "not slow"`) holds the tests that load no model, start no server and run
# no process. A test is slow when it, or a fixture it uses, calls one of these (or asks for the SmolLM2 path).
SLOW_CALLS = re.compile(r"\b(run_cli|cli|fake_server|transformers_server|judge_server|Embedder|build_index|load_index|"
                        r"Popen|subprocess\.\w+|pexpect\.\w+)\(")
SLOW_FIXTURES = {"smollm2_path", "cli", "served"}


@functools.cache
def _calls_something_slow(func: Callable) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return bool(SLOW_CALLS.search(source.split("\n", 1)[-1]))  # the def line names the function itself


def _is_slow(item: pytest.Item) -> bool:
    if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    funcs = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        funcs += [d.func for defs in info.name2fixturedefs.values() for d in defs]
    return any(f is not None and _calls_something_slow(f) for f in funcs)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
