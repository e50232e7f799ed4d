"""Read rules and knowledge entries from Markdown files with YAML front matter.

A document file looks like:

    ---
    id: brand-explicit-other
    title: The query names a brand and the item is another brand
    tags: [brand]
    grades: [L2]
    schemes: []
    cues: [different brand, competitor brand, "no"]
    positive_example: "query 'nike running shoes' / item 'Adidas Adizero running shoe' -> L2"
    negative_example: "query 'nike running shoes' / item 'Nike Pegasus 40 road running shoe' -> L4"
    ---
    The body, in plain prose, is the rule text.

`kind` (rule | knowledge) defaults to the kind of the shipped folder the file sits in, else "rule".
The positive example shows the rule at work; the negative one a near case where it does not hold.
Quote YAML words such as "no", "yes", "on" and "off", which YAML otherwise reads as true/false.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from schemas.errors import CotgenError, read_text
from schemas.labels import BUILTIN_SCHEMES, LabelScheme
from schemas.rule import Rule

BUILTIN = "builtin"
PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_DIRS: dict[str, Path] = {"rule": PACKAGE_DIR / "rules", "knowledge": PACKAGE_DIR / "knowledge"}
GRADES_SCHEME = "taosr4"
FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def source_dirs(sources: Iterable[str], base: Path | None = None) -> list[Path]:
    """Directories for `sources`: "builtin" is the shipped rules and knowledge; others resolve against `base`."""
    dirs: list[Path] = []
    for src in sources:
        if src == BUILTIN:
            dirs.extend(BUILTIN_DIRS.values())
            continue
        path = Path(src).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_dir():
            raise CotgenError(f"index.rules: '{src}' is not a directory of .md rules (nor \"{BUILTIN}\")")
        dirs.append(path)
    return dirs


def _field_error(path: Path, err: dict) -> CotgenError:
    field = ".".join(str(p) for p in err["loc"]) or "(front matter)"
    return CotgenError(f"{path}: {field}: {err['msg']}")


def parse_document(path: Path, default_kind: str = "rule") -> Rule:
    """One Markdown file as a Rule; errors name the file and the field."""
    try:
        raw = read_text(path)
    except OSError as e:
        raise CotgenError(f"{path}: cannot read: {e.strerror or e}") from None
    match = FRONT_MATTER.match(raw)
    if match is None:
        raise CotgenError(f"{path}: front matter: the file must start with a '---' block and close it with '---'")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 2})" if where is not None else ""
        raise CotgenError(f"{path}: front matter: not valid YAML{line}: {getattr(e, 'problem', e)}") from None
    if not isinstance(meta, dict):
        raise CotgenError(f"{path}: front matter: expected 'key: value' lines, got {type(meta).__name__}")
    unknown = sorted(set(meta) - (set(Rule.model_fields) - {"text", "path"}))
    if unknown:
        raise CotgenError(f"{path}: {unknown[0]}: unknown field (fields: {', '.join(_front_matter_fields())})")
    for field in ("tags", "grades", "schemes"):
        if isinstance(meta.get(field), str):
            meta[field] = [meta[field]]
    meta.setdefault("kind", default_kind)
    try:
        rule = Rule.model_validate({**meta, "text": " ".join(match.group(2).split()), "path": str(path)})
    except ValidationError as e:
        raise _field_error(path, e.errors()[0]) from None
    _check_rule(path, rule)
    return rule


def _front_matter_fields() -> list[str]:
    return [f for f in Rule.model_fields if f not in ("text", "path")]


def _check_rule(path: Path, rule: Rule) -> None:
    if not ID_PATTERN.match(rule.id):
        raise CotgenError(f"{path}: id: '{rule.id}' must be letters, digits, '.', '_' or '-'")
    for field in ("title", "text"):
        if not getattr(rule, field).strip():
            raise CotgenError(f"{path}: {field}: must not be empty" + (" (write the rule below the front matter)"
                                                                        if field == "text" else ""))


def check_grades(rule: Rule, schemes: Mapping[str, LabelScheme]) -> None:
    """Grades must be taosr4 ids, or ids of one of the rule's own schemes; schemes must exist."""
    for name in rule.schemes:
        if name not in schemes:
            raise CotgenError(f"{rule.path}: schemes: unknown label scheme '{name}' (known: {', '.join(sorted(schemes))})")
    allowed = set(schemes[GRADES_SCHEME].ids) if GRADES_SCHEME in schemes else set()
    for name in rule.schemes:
        allowed |= set(schemes[name].ids)
    bad = [g for g in rule.grades if g not in allowed]
    if bad:
        raise CotgenError(f"{rule.path}: grades: unknown grade '{bad[0]}' (allowed here: {', '.join(sorted(allowed))})")


def load_documents(sources: list[str], base: Path | None = None,
                   schemes: Mapping[str, LabelScheme] | None = None) -> list[Rule]:
    """Every .md document under `sources` ("builtin" or directories), sorted by id; ids must be unique.

    `base` resolves relative directories (the workspace root); `schemes` adds user label schemes.
    """
    known = {**BUILTIN_SCHEMES, **(schemes or {})}
    kinds = {d: k for k, d in BUILTIN_DIRS.items()}
    seen: dict[str, Rule] = {}
    for directory in source_dirs(sources, base):
        for path in sorted(directory.rglob("*.md")):
            if path.name.lower() == "readme.md":
                continue
            rule = parse_document(path, default_kind=kinds.get(directory, "rule"))
            check_grades(rule, known)
            if rule.id in seen:
                raise CotgenError(f"{path}: id: '{rule.id}' is already used by {seen[rule.id].path}")
            seen[rule.id] = rule
    return sorted(seen.values(), key=lambda r: r.id)


def embedding_text(rule: Rule) -> str:
    """The document's own view: cues, title, body and both examples (the examples carry product vocabulary)."""
    parts = [f"Signals: {', '.join(rule.cues)}."] if rule.cues else []
    parts += [rule.title.rstrip(".") + ".", rule.text]
    parts += [f"Example: {ex}" for ex in (rule.positive_example, rule.negative_example) if ex]
    return " ".join(parts)

