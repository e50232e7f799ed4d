"""A workspace: a directory with cotgen.toml and everything the toolkit writes for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schemas.config import CONFIG_FILE, CotgenConfig, load_config


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: CotgenConfig

    @classmethod
    def open(cls, root: Path | str) -> Workspace:
        root = Path(root).resolve()
        return cls(root=root, config=load_config(root / CONFIG_FILE))

    def path(self, relative: str) -> Path:
        """A config path resolved against the workspace root."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    def model(self, ref: str) -> str:
        """A model path relative to the workspace (e.g. a training run) resolves against it; other refs pass through."""
        if ref.startswith("bundled:"):
            return ref
        p = self.path(ref)
        return str(p) if p.exists() else ref

    @property
    def store_path(self) -> Path:
        return self.path(self.config.store.path)

    @property
    def indexes_dir(self) -> Path:
        return self.root / "indexes"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def rejects_dir(self) -> Path:
        return self.root / "rejects"
