"""The run manifest a training run leaves in its output directory (light: no torch or TRL import)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RUN_MANIFEST = "run_manifest.json"


def main_process() -> bool:
    """Under `accelerate launch` every rank runs the same code; only rank 0 writes files of its own."""
    return os.environ.get("RANK", "0") == "0"


def read_run_manifest(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / RUN_MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_run_manifest(output_dir: Path, payload: dict[str, Any]) -> None:
    """Written aside and renamed, so a reader never sees half a manifest."""
    if not main_process():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / (RUN_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    tmp.replace(output_dir / RUN_MANIFEST)
