"""Dataset references `NAME[@vK][:split]` and where an exported version lives on disk."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import CotgenError

_REF = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)(?:@v?(?P<version>\d+))?(?::(?P<split>[A-Za-z0-9_\-]+))?$")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def check_dataset_name(name: str) -> str:
    """`name` unchanged if it names one folder under datasets/; a one-line error otherwise ('.' and '..' too)."""
    if not _NAME.fullmatch(name) or not name.strip("."):
        raise CotgenError(f"dataset name '{name}': use letters, digits, '.', '_' or '-', and not only dots")
    return name


@dataclass(frozen=True)
class DatasetRef:
    name: str
    version: int | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        check_dataset_name(self.name)

    @classmethod
    def parse(cls, text: str) -> DatasetRef:
        m = _REF.match(text.strip())
        if not m:
            raise CotgenError(f"dataset reference '{text}' is not NAME[@vK][:split]")
        version = m.group("version")
        return cls(m.group("name"), int(version) if version else None, m.group("split"))

    def versions(self, datasets_dir: Path) -> list[int]:
        folder = datasets_dir / self.name
        found = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit() and (p / "manifest.json").exists()]
        return sorted(found)

    def resolve(self, datasets_dir: Path) -> Path:
        """The version directory (the latest when no version is given)."""
        versions = self.versions(datasets_dir)
        if not versions:
            raise CotgenError(f"no exported versions of dataset '{self.name}' under {datasets_dir}; run `cotgen export`")
        version = self.version if self.version is not None else versions[-1]
        if version not in versions:
            raise CotgenError(f"dataset '{self.name}' has no v{version} (versions: {', '.join(f'v{v}' for v in versions)})")
        return datasets_dir / self.name / f"v{version}"
