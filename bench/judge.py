"""Step judge throughput: steps judged per second by the bundled SmolLM2 on CPU, and the client's own ceiling.

The CoTs are teacher answers (five steps each, rendered and parsed as generation stores them) for real
CrowdFlower pairs in a fresh workspace store. Printed for each judge:

1. the bundled model through the transformers backend (structured: the field decoder writes one reason
   and one verdict per step), model load excluded: CoTs/s, steps/s, tokens in/out per CoT, parse rate;
2. a loopback OpenAI-compatible judge answering instantly: the judge run's own overhead (planning,
   rendering, parsing, storing), an upper bound on what a fast server can be fed.

    python bench/judge.py                 # 16 CoTs for the model, 500 for the loopback judge
    python bench/judge.py --cots 32 --batch-size 8 --max-tokens 120
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers_curation import ingest_crowdflower, pairs_of_queries, synth_run  # noqa: E402
from helpers_judge import judge_server  # noqa: E402

from cotgen.app.judge import JudgeOptions, JudgeSummary, run_judge  # noqa: E402
from curation.store import open_store  # noqa: E402
from schemas.config import JudgeConfig  # noqa: E402
from schemas.workspace import Workspace  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"


def teacher_cots(ws: Workspace, queries: int) -> int:
    """One teacher CoT per pair of the first `queries` queries; returns how many were stored."""
    with open_store(ws) as store:
        synth_run(store, pairs_of_queries(store, queries), "teacher-bench", "teacher", 1, "cot_first")
        return store.scalar("SELECT count(*) FROM samples")


def show(title: str, s: JudgeSummary) -> None:
    cots_per_s = s.judged / s.wall_s if s.wall_s else 0.0
    print(f"{title}: {s.judged} CoTs ({s.steps_judged} steps) in {s.wall_s:.1f} s -> {cots_per_s:.2f} CoTs/s, "
          f"{s.steps_per_s or 0:.2f} steps/s; tokens in/out per CoT {s.tokens_in / max(s.judged, 1):.0f} / "
          f"{s.tokens_out / max(s.judged, 1):.0f}; parse rate {s.store['parse_rate'] or 0:.0%} {s.store['status']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cots", type=int, default=16, help="CoTs the bundled model judges")
    ap.add_argument("--loopback-cots", type=int, default=500, help="CoTs the loopback judge answers (0: skip)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--skip-model", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = ingest_crowdflower(Path(tmp) / "ws", SHARED_DATA)
        stored = teacher_cots(ws, 200)
        print(f"{stored} teacher CoTs on real CrowdFlower pairs (5 steps each, gold label shown to the judge)")
        if not a.skip_model:
            config = JudgeConfig.model_validate({**ws.config.judge.model_dump(), "batch_size": a.batch_size,
                                                 "max_tokens": a.max_tokens, "threads": a.threads})
            started = time.perf_counter()
            summary = run_judge(ws, JudgeOptions(config=config, limit=a.cots, run_name="bench-model"))
            show(f"bundled SmolLM2-135M, CPU, batch {a.batch_size}, max_tokens {a.max_tokens} "
                 f"(load + run {time.perf_counter() - started:.0f} s)", summary)
        if a.loopback_cots:
            with judge_server() as (url, _):
                config = JudgeConfig.model_validate({**ws.config.judge.model_dump(), "backend": "openai",
                                                     "model": "fixed-judge", "base_urls": [url]})
                summary = run_judge(ws, JudgeOptions(config=config, limit=a.loopback_cots, run_name="bench-loopback"))
            show("loopback judge (instant answers): the judge run's own overhead", summary)


if __name__ == "__main__":
    main()
