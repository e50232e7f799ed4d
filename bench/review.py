"""Review card speed: time from a decision key to the next card drawn, with 10,000 items queued, through Pilot.

Target (issue 15): the next card appears under 100 ms after a key. The workspace is `cotgen init --example` +
`cotgen ingest` (the real CLI); one teacher run of --items samples with five CoT steps, label probabilities and
retrieved rule ids is written spread over its pairs, so the `random` queue holds --items claimable items. Each
measured key is `a` (accept: journaled and fsynced, then the next card filled in); the clock runs from Pilot
sending the key to the first screen update composed after the next card was filled in (headless, so the
final write of that update to a terminal is not counted). Pilot's own idle waits between keys are not counted.

Usage: python bench/review.py [--items 10000] [--keys 300] [--size 120x40] [--dir /tmp/cotgen-bench-review]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cotgen.app.review import end_session, queue_spec, start_session  # noqa: E402
from cotgen.tui.review import ReviewApp  # noqa: E402
from curation.store import Store  # noqa: E402
from schemas.answer import render_answer  # noqa: E402
from schemas.sample import STEP_NAMES, Step  # noqa: E402
from schemas.workspace import Workspace  # noqa: E402

GRADES = ["L4", "L3", "L2", "L1"]
RULES = ["accessory-for-queried-product", "alternative-like-x", "brand-mismatch"]


def make_workspace(folder: Path) -> Path:
    ws = folder / "ws"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for args in (["init", "--example", str(ws)], ["ingest", "-w", str(ws)]):
        subprocess.run([sys.executable, "-m", "cotgen.cli", *args], cwd=ROOT, check=True, capture_output=True)
    return ws


def seed(ws_root: Path, items: int) -> int:
    """Write one run of `items` samples spread over the workspace's pairs; returns the number of pairs."""
    ws = Workspace.open(ws_root)
    samples, completions = [], []
    with Store(ws.store_path) as store:
        pairs = store.query("SELECT pair_id, query, title, label FROM pairs ORDER BY pair_id")
        for i in range(items):
            p = pairs[i % len(pairs)]
            predicted = GRADES[(GRADES.index(p["label"]) + (i % 3 == 0)) % 4]
            steps = [Step(name=n, text=f"Step {n.replace('_', ' ')} for '{p['query']}' and '{p['title']}'.")
                     for n in STEP_NAMES]
            probs = {g: 0.7 if g == predicted else 0.1 for g in GRADES}
            sid = f"bench-{i:06d}"
            samples.append({"sample_id": sid, "run_id": "bench-run", "pair_id": p["pair_id"],
                            "sample_index": i // len(pairs), "steps": json.dumps([s.model_dump() for s in steps]),
                            "predicted_label": predicted, "label_probs": json.dumps(probs), "parse_status": "ok",
                            "consistent": True, "rule_ids": RULES[: 1 + i % 3]})
            completions.append({"request_key": sid, "run_id": "bench-run", "pair_id": p["pair_id"],
                                "sample_index": i // len(pairs), "text": render_answer(steps, predicted, "label_first")})
        with store.transaction() as con:
            con.execute("INSERT INTO runs (run_id, name, role, backend, model, prompt_name, prompt_hash, params, "
                        "status) VALUES ('bench-run', 'teacher-bench', 'teacher', 'openai', 'bench', 'teacher', "
                        "'bench', '{\"order\": \"label_first\"}', 'done')")
            con.register("new_samples", pa.Table.from_pylist(samples))
            con.register("new_completions", pa.Table.from_pylist(completions))
            con.execute("INSERT INTO samples (sample_id, run_id, pair_id, sample_index, steps, predicted_label, "
                        "label_probs, parse_status, consistent, rule_ids) SELECT sample_id, run_id, pair_id, "
                        "sample_index, steps, predicted_label, label_probs, parse_status, consistent, rule_ids "
                        "FROM new_samples")
            con.execute("INSERT INTO completions (request_key, run_id, pair_id, sample_index, text) "
                        "SELECT request_key, run_id, pair_id, sample_index, text FROM new_completions")
    return len(pairs)


class TimedReviewApp(ReviewApp):
    """The review app, noting when each card is filled in and when the screen is next composed."""

    def __init__(self, *args: object, **kw: object):
        super().__init__(*args, **kw)
        self.card_at = 0.0
        self.drawn_at: list[float] = []

    def refresh_card(self) -> None:
        super().refresh_card()
        self.card_at = time.perf_counter()

    def _display(self, screen: object, renderable: object) -> None:
        # Textual's hook for each composed screen update (headless: composed, not written to a terminal).
        if renderable is not None:
            self.drawn_at.append(time.perf_counter())
        super()._display(screen, renderable)


async def drive(app: TimedReviewApp, size: tuple[int, int], keys: int) -> tuple[list[float], list[float]]:
    """Seconds from each `a` sent by Pilot to the first screen update showing the next card, and to the card
    being filled in (the decision journaled, the next item chosen, the panes updated)."""
    out, filled = [], []
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        header = app.card_screen.query_one("#header")
        for _ in range(keys):
            before = app.desk.current.item_key
            start = time.perf_counter()
            await pilot.press("a")
            await pilot.pause()
            now = app.desk.current.item_key
            assert now != before and now in str(header.render()), "the header does not show the next item"
            out.append(next(t for t in app.drawn_at if t >= app.card_at) - start)
            filled.append(app.card_at - start)
        await pilot.press("q")
    return out, filled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/cotgen-bench-review"))
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    ws_root = make_workspace(args.dir)
    pairs = seed(ws_root, args.items)
    ws = Workspace.open(ws_root)
    t0 = time.perf_counter()
    desk = start_session(ws, "bench", queue_spec("bench", "random", None, None), None)
    opened = time.perf_counter() - t0
    queued = desk.session.progress().total
    times, filled = asyncio.run(drive(TimedReviewApp(desk), size, args.keys))
    summary = end_session(desk)
    ms = sorted(t * 1000 for t in times)
    print(f"review card, {args.size} terminal, queue `random` with {queued:,} items queued "
          f"({args.items:,} samples over {pairs} example pairs; claims of 20 made ahead in the background)")
    print(f"session open (flush, resume, first claim): {opened * 1000:.0f} ms")
    print(f"key `a` -> next card, {len(ms)} keys: median {statistics.median(ms):.1f} ms, "
          f"p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms (target < 100 ms)")
    print(f"  of which up to the card filled in (journal fsync, next item, panes updated): median "
          f"{statistics.median(filled) * 1000:.1f} ms")
    print(f"decisions in the store at the end: {summary.decisions} (busy: {summary.store_busy})")


if __name__ == "__main__":
    main()
