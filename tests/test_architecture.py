"""The layering rule, checked on the source: libraries import only downward and never print, SQL lives in .sql files,
the CLI is signatures and rendering, and no test or bench imports the commands (the Textual app is tested through Pilot)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each layer may import from the project (besides itself). cotgen's generation library is `cotgen`
# minus its application (cotgen/app) and CLI (cotgen/commands, cotgen/tui, cotgen/cli.py) layers.
ALLOWED = {
    "schemas": set(),
    "retrieval": {"schemas"},
    "curation": {"schemas"},
    "training": {"schemas"},
    "cotgen.lib": {"schemas", "retrieval"},
    "cotgen.app": {"schemas", "retrieval", "curation", "training", "cotgen.lib"},
    "cotgen.cli": {"schemas", "retrieval", "curation", "training", "cotgen.lib", "cotgen.app"},
}
CLI_PARTS = ("commands", "tui")
# Statements are written in upper case here; a docstring starting "Create the run" is prose, not SQL.
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WITH|COPY|ATTACH|PRAGMA)\s")


def _layer_of_file(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[0] != "cotgen":
        return parts[0]
    if len(parts) > 2 and parts[1] == "app":
        return "cotgen.app"
    if (len(parts) > 2 and parts[1] in CLI_PARTS) or parts[1] == "cli.py":
        return "cotgen.cli"
    return "cotgen.lib"


def _layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] not in {"schemas", "retrieval", "curation", "training", "cotgen"}:
        return None
    if parts[0] != "cotgen":
        return parts[0]
    if len(parts) > 1 and parts[1] == "app":
        return "cotgen.app"
    if len(parts) > 1 and (parts[1] in CLI_PARTS or parts[1] == "cli"):
        return "cotgen.cli"
    return "cotgen.lib"


def _package_files() -> list[Path]:
    return sorted(p for pkg in ALLOWED if "." not in pkg for p in (ROOT / pkg).rglob("*.py")) + sorted(
        (ROOT / "cotgen").rglob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _sources() -> dict[Path, ast.AST]:
    files = {p for p in _package_files() if "__pycache__" not in p.parts}
    return {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(files)}


@pytest.fixture(scope="module")
def sources() -> dict[Path, ast.AST]:
    return _sources()


def test_packages_import_only_downward(sources: dict[Path, ast.AST]) -> None:
    wrong = []
    for path, tree in sources.items():
        layer = _layer_of_file(path)
        for name in _imports(tree):
            target = _layer_of_module(name)
            if target is not None and target != layer and target not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)} ({layer}) imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_libraries_and_use_cases_never_print(sources: dict[Path, ast.AST]) -> None:
    wrong = []
    for path, tree in sources.items():
        if _layer_of_file(path) == "cotgen.cli":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: print()")
            if isinstance(node, ast.ImportFrom) and node.module in {"rich.console", "rich.progress"}:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {node.module}")
    assert not wrong, "\n".join(wrong)


def test_sql_lives_in_sql_files(sources: dict[Path, ast.AST]) -> None:
    wrong = []
    for path, tree in sources.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.strip()[:60]!r}")
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_the_cli_imports_it() -> None:
    wrong = []
    for folder in ("tests", "bench"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
                if name.startswith("cotgen.commands"):
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_cli_is_at_most_a_third_of_cotgen(sources: dict[Path, ast.AST]) -> None:
    lines = {"cli": 0, "all": 0}
    for path in sources:
        if path.relative_to(ROOT).parts[0] != "cotgen":
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        lines["all"] += n
        if path.relative_to(ROOT).parts[1] == "commands":
            lines["cli"] += n
    assert lines["cli"] / lines["all"] <= 0.30, lines
