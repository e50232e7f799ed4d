"""`cotgen report`: the data report (figures and PNG plots) of the whole store; every export writes its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.datasets import SPLITS_FILE, latest_version
from curation.report import ReportData, report_data, write_plots
from curation.store import open_store
from schemas.workspace import Workspace


@dataclass
class ReportResult:
    """Where the plots went, what they cover (`scope`), and the figures behind them."""

    out_dir: Path
    plots: list[Path]
    scope: str
    data: ReportData

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "plots": [str(p) for p in self.plots], "scope": self.scope,
                **self.data.to_dict()}


def store_report(ws: Workspace, out_dir: Path | None = None) -> ReportResult:
    """The whole store's report; labels are split as in the latest version of [export].name, if there is one."""
    out = out_dir or ws.root / "report"
    version = latest_version(ws.datasets_dir, ws.config.export.name)
    splits = pq.read_table(version / SPLITS_FILE) if version and (version / SPLITS_FILE).exists() else None
    scope = f"whole store, splits of {version.parent.name} {version.name}" if splits is not None else "whole store"
    with open_store(ws, read_only=True) as store:
        data = report_data(store, splits)
    return ReportResult(out, write_plots(data, out, scope), scope, data)

