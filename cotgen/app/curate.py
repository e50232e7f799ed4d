"""`cotgen curate stats|difficulty` and the curate stage: pass@N statistics and difficulty of generation runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotgen.app.progress import Reporter
from curation.difficulty import curate, store_difficulty
from curation.stats import RunStats, export_pair_stats, resolve_runs, run_stats
from curation.store import open_store
from schemas.config import DifficultyBins
from schemas.errors import CotgenError
from schemas.workspace import Workspace


@dataclass
class StatsResult:
    """Figures of each run; `pairs_written` is set when per-pair statistics went to a Parquet file."""

    runs: list[RunStats]
    pairs_written: int | None = None
    pairs_path: Path | None = None

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.runs]


def curate_stats(ws: Workspace, runs: list[str] | None = None, pairs_path: Path | None = None) -> StatsResult:
    """pass@1..N, majority vote, parse rate, per-label accuracy and confusion of the named runs (default: all)."""
    with open_store(ws, read_only=True) as store:
        picked = resolve_runs(store, runs)
        written = None
        if pairs_path is not None:
            if len(picked) != 1:
                raise CotgenError(f"--pairs: name exactly one run with --run ({len(picked)} selected)")
            written = export_pair_stats(store, picked[0], str(pairs_path))
        return StatsResult(run_stats(store, picked, gates=ws.config.curation), written, pairs_path)


@dataclass
class DifficultyResult:
    """Pairs per difficulty bin of each policy run, and the bins they were computed with."""

    bins: DifficultyBins
    runs: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, int]]:
        return self.runs


def compute_difficulty(ws: Workspace, runs: list[str] | None = None) -> DifficultyResult:
    """Store difficulty for the named runs (default: every policy run with samples)."""
    bins = ws.config.curation.difficulty
    with open_store(ws) as store:
        picked = resolve_runs(store, runs, role=None if runs else "policy")
        return DifficultyResult(bins, store_difficulty(store, picked, bins))


@dataclass
class CurateResult:
    """The curate stage: statistics of every run and difficulty of every policy run."""

    stats: StatsResult
    difficulty: DifficultyResult

    def to_dict(self) -> dict[str, Any]:
        return {"runs": len(self.stats.runs), "difficulty": self.difficulty.runs}


class CurateStage:
    """Statistics of every run and difficulty of every policy run, in one pass; cheap to repeat."""

    name = "curate"

    def run(self, ws: Workspace, report: Reporter) -> CurateResult:
        cur = ws.config.curation
        with open_store(ws) as store:
            stats, summary = curate(store, resolve_runs(store), cur)
        return CurateResult(StatsResult(stats), DifficultyResult(cur.difficulty, summary))


STAGES = [CurateStage()]
