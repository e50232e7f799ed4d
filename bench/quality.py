"""Does the loop improve the model? SmolLM2 zero-shot vs after SFT on exported CrowdFlower data.

Pipeline, all real: `cotgen init` + `cotgen ingest` of ../shared/data/crowdflower/train_dev.csv, one teacher
run written into the store with SQL, `cotgen export` (splits grouped by query, the policy prompt of
cotgen.prompting), then SFT with TRL for a wall-clock budget, and label-probability evaluation (post-CoT:
the first label token's distribution) of the base and the trained model on the same test pairs.

Honest caveats: no teacher LLM runs offline at this scale, so the teacher's answers are label_first answers
built from the gold label with short template reasoning (tests/helpers_training.py); the benchmark measures
how much the label head learns from exported data, not the quality of real CoT. To fit a CPU budget the
prompts carry title only (--descriptions adds them) and examples are cut at --max-length tokens, which
keeps the label and the start of the reasoning.

    python bench/quality.py                 # about 15 minutes of SFT plus two evaluations
    python bench/quality.py --budget-min 3 --eval-limit 100   # a shorter run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datasets import disable_progress_bars  # noqa: E402
from helpers_curation import CROWDFLOWER_MAP, add_run, add_samples, pairs_of_queries  # noqa: E402
from helpers_generation import configure  # noqa: E402
from helpers_training import answer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from curation.store import open_store  # noqa: E402
from schemas.datasets import DatasetRef  # noqa: E402
from schemas.workspace import Workspace  # noqa: E402
from training.configs import SFTTrainConfig  # noqa: E402
from training.data import ExportedVersion, open_version  # noqa: E402
from training.evaluate import eval_rows  # noqa: E402
from training.metrics import Metrics, scheme_metrics  # noqa: E402

from conftest import run_cli  # noqa: E402

MODEL = "bundled:smollm2-135m-instruct"
disable_progress_bars()
hf_logging.disable_progress_bar()


def build_export(root: Path, data: Path, descriptions: bool, sft_balance: float | None) -> ExportedVersion:
    """Ingest CrowdFlower, store one template-teacher answer per pair, export the sft set."""
    run_cli("init", str(root))
    if sft_balance is not None:
        configure(root, "curation", sft_balance=sft_balance)
    columns = CROWDFLOWER_MAP if descriptions else CROWDFLOWER_MAP.replace(",description=product_description", "")
    run_cli("ingest", str(data), "-w", str(root), "--source", "crowdflower", "--scheme", "crowdflower",
            "--map", columns, "--strip-html")
    ws = Workspace.open(root)
    with open_store(ws) as store:
        pairs = pairs_of_queries(store, 10_000)
        run_id = add_run(store, "template-teacher", "teacher")
        add_samples(store, run_id, [(p.pair_id, 0, answer(vars(p), p.label, "label_first")) for p in pairs])
    run_cli("export", "crowdflower", "--kind", "sft", "--format", "label_first", "-w", str(root))
    return open_version(ws.datasets_dir, DatasetRef("crowdflower"))


def score(model: str, version: ExportedVersion, rows: list[dict], batch_size: int) -> tuple[Metrics, float]:
    from training.predict import label_prob_predictions, load_model

    lm = load_model(model)
    started = time.monotonic()
    preds = label_prob_predictions(lm, rows, version.scheme, batch_size)
    seconds = time.monotonic() - started
    return scheme_metrics([p.gold for p in preds], [p.predicted for p in preds], version.scheme), seconds


def line(name: str, m: Metrics) -> str:
    predicted = {g: sum(row[j] for row in m.confusion) for j, g in enumerate(m.labels)}
    spread = " ".join(f"{g}:{n}" for g, n in predicted.items())
    return (f"{name:<22} macro-F1 {m.macro_f1:.3f}  QWK {m.qwk:+.3f}  accuracy {m.accuracy:.3f}  "
            f"binary-F1 {m.binary_f1:.3f}  predicted [{spread}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "crowdflower" / "train_dev.csv")
    ap.add_argument("--budget-min", type=float, default=15.0, help="SFT wall-clock budget in minutes")
    ap.add_argument("--eval-limit", type=int, default=300, help="test pairs scored (a seeded subset: sorted by pair id)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--learning-rate", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=160,
                    help="tokens per SFT example; the label comes first, so a cut only shortens the reasoning")
    ap.add_argument("--descriptions", action="store_true",
                    help="include product descriptions in the prompts (about twice the tokens per pair)")
    ap.add_argument("--sft-balance", type=float, default=None,
                    help="curation.sft_balance for the export (1.0: every train label as often as the rarest; default: off)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the workspace here (default: a temp dir)")
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cotgen-quality-"))
    t0 = time.monotonic()
    version = build_export(workdir / "ws", args.data, args.descriptions, args.sft_balance)
    counts = version.manifest["counts"]["sft"]
    print(f"export {version.name}@v{version.version}: sft rows {counts} (split by query), "
          f"{time.monotonic() - t0:.0f}s")
    rows = eval_rows(version, "test", args.eval_limit)
    print(f"scoring {len(rows)} test pairs (label-prob mode)")

    # Validation keeps the natural label mix even when --sft-balance evens out train.
    majority = max(version.scheme.ids, key=lambda g: sum(r["label"] == g for r in version.split("sft", "validation")))
    base_m = scheme_metrics([r["label"] for r in rows], [majority] * len(rows), version.scheme)
    zero_m, zero_s = score(MODEL, version, rows, args.batch_size)
    print(f"zero-shot scored in {zero_s:.0f}s ({len(rows) / zero_s:.2f} pairs/s)")

    from training.sft import train_sft

    cfg = SFTTrainConfig(learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
                         gradient_accumulation_steps=1, max_steps=100_000, max_length=args.max_length,
                         save_steps=100_000, logging_steps=10, warmup_steps=10, time_budget_s=args.budget_min * 60)
    out = workdir / "ws" / "runs" / "crowdflower-sft"
    started = time.monotonic()
    result = train_sft(version, MODEL, out, cfg)
    train_s = time.monotonic() - started
    steps_per_s = result.global_step / result.train_metrics.get("train_runtime", train_s)
    sft_m, sft_s = score(str(out), version, rows, args.batch_size)

    print()
    print(f"SFT: {result.global_step} steps x {args.batch_size} examples in "
          f"{result.train_metrics.get('train_runtime', train_s):.0f}s -> {steps_per_s:.3f} steps/s, "
          f"{steps_per_s * args.batch_size:.2f} examples/s; final loss {result.train_metrics.get('train_loss', float('nan')):.3f}")
    print(line(f"majority ({majority})", base_m))
    print(line("SmolLM2 zero-shot", zero_m))
    print(line("SmolLM2 + SFT", sft_m))
    print(f"delta: macro-F1 {sft_m.macro_f1 - zero_m.macro_f1:+.3f}, QWK {sft_m.qwk - zero_m.qwk:+.3f}; "
          f"total {time.monotonic() - t0:.0f}s; workspace {workdir / 'ws'}")


if __name__ == "__main__":
    main()
