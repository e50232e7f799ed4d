"""Exported dataset versions as training reads them: `datasets/NAME/vK/manifest.json` plus one DatasetDict per kind."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.answer import AnswerOrder, parse_answer
from schemas.datasets import DatasetRef
from schemas.errors import CotgenError
from schemas.labels import BUILTIN_SCHEMES, LabelScheme
from schemas.sample import STEP_NAMES

if TYPE_CHECKING:  # `datasets` takes seconds to import; the CLI must not pay for it on every command
    from datasets import Dataset, DatasetDict

MANIFEST = "manifest.json"
# Columns TRL's trainers read for each kind; the rest (pair ids, stages) stay in the export for lineage.
TRAIN_COLUMNS = {
    "sft": ["prompt", "completion"],
    "dpo": ["prompt", "chosen", "rejected"],
}
# Step-reward columns attached to GRPO rows; `completions` itself would clash with TRL's reward argument.
STEP_NAMES_COL, STEP_TEXTS, STEP_LABELS = "step_names", "step_completions", "step_labels"


@dataclass(frozen=True)
class ExportedVersion:
    """One exported version: where it is, its manifest, the label scheme and answer order it was written in."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]
    scheme: LabelScheme
    order: AnswerOrder

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash", ""))

    @property
    def kinds(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if (p / "dataset_dict.json").exists())

    def load(self, kind: str) -> DatasetDict:
        from datasets import load_from_disk

        folder = self.path / kind
        if not (folder / "dataset_dict.json").exists():
            raise CotgenError(
                f"{self.path}: dataset {self.name}@v{self.version} has no '{kind}' set "
                f"(it has: {', '.join(self.kinds) or 'none'}); export it with `cotgen export {self.name} --kind {kind}`"
            )
        return load_from_disk(str(folder))

    def split(self, kind: str, split: str) -> Dataset:
        sets = self.load(kind)
        if split not in sets:
            raise CotgenError(f"{self.path / kind}: no split '{split}' (splits: {', '.join(sets)})")
        return sets[split]

    def lineage(self) -> dict[str, Any]:
        """What a run manifest records about its data."""
        return {"name": self.name, "version": self.version, "content_hash": self.content_hash,
                "path": str(self.path), "scheme": self.scheme.name, "format": self.order}


def _scheme(manifest: dict[str, Any], where: Path) -> LabelScheme:
    raw = manifest.get("scheme", manifest.get("label_scheme"))
    if isinstance(raw, dict):
        return LabelScheme.model_validate(raw)
    if isinstance(raw, str) and raw in BUILTIN_SCHEMES:
        return BUILTIN_SCHEMES[raw]
    raise CotgenError(f"{where}: scheme: missing or not a label scheme definition")


def _order(manifest: dict[str, Any], where: Path) -> AnswerOrder:
    order = manifest.get("format") or manifest.get("config", {}).get("export", {}).get("format")
    if order not in ("label_first", "cot_first"):
        raise CotgenError(f"{where}: format: expected label_first or cot_first, got {order!r}")
    return order


def open_version(datasets_dir: Path, ref: DatasetRef) -> ExportedVersion:
    """The exported version `ref` names (the latest when it names none)."""
    path = ref.resolve(datasets_dir)
    where = path / MANIFEST
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CotgenError(f"{where}: not valid JSON: {e}") from None
    return ExportedVersion(name=ref.name, version=int(path.name[1:]), path=path, manifest=manifest,
                           scheme=_scheme(manifest, where), order=_order(manifest, where))


def training_columns(ds: Dataset, kind: str) -> Dataset:
    """Only the columns the trainer consumes, so TRL never mistakes lineage columns for inputs."""
    wanted = TRAIN_COLUMNS[kind]
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise CotgenError(f"{kind} set: missing column(s) {', '.join(missing)} (has: {', '.join(ds.column_names)})")
    return ds.select_columns(wanted)


def _step_name(text: str, position: int, scheme: LabelScheme) -> str:
    """The step a reference text belongs to: its own header if it has one, else its position."""
    parsed = parse_answer(text, scheme).steps
    if parsed:
        return parsed[0].name
    return STEP_NAMES[position] if position < len(STEP_NAMES) else "other"


def attach_step_labels(grpo: Dataset, steps: Dataset, scheme: LabelScheme) -> Dataset:
    """Join a `steps` set's per-step labels onto GRPO rows by pair id (rows without annotations get empty lists)."""
    by_pair: dict[str, tuple[list[str], list[str], list[bool]]] = {}
    for row in steps.select_columns(["pair_id", "completions", "labels"]):
        names, texts, labels = by_pair.setdefault(row["pair_id"], ([], [], []))
        for i, (text, ok) in enumerate(zip(row["completions"], row["labels"], strict=True)):
            names.append(_step_name(text, i, scheme))
            texts.append(text)
            labels.append(bool(ok))
    empty: tuple[list[str], list[str], list[bool]] = ([], [], [])
    joined = [by_pair.get(pid, empty) for pid in grpo["pair_id"]]
    for col, i in ((STEP_NAMES_COL, 0), (STEP_TEXTS, 1), (STEP_LABELS, 2)):
        grpo = grpo.add_column(col, [j[i] for j in joined])
    return grpo
