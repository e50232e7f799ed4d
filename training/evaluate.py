"""`cotgen eval`: predictions on an exported split, metrics, optional CumPT, written as JSON and a PNG."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.errors import CotgenError
from schemas.labels import LabelScheme
from training.cumpt import build_tiers, calibrate_beta, tier_metrics
from training.data import ExportedVersion
from training.metrics import Metrics, scheme_metrics
from training.predict import (
    LoadedModel,
    Prediction,
    Progress,
    generate_predictions,
    label_prob_predictions,
    load_model,
)

Mode = Literal["generate", "label-prob"]
# Every labelled pair of each split with the policy prompt and the gold label: what evaluation scores.
EVAL_SET = "eval"
# Versions exported before the `eval` set: each of these holds only the pairs its selection kept (sft: the
# teacher was right; grpo: hard for the policy), so evaluation falls back to their union (a biased slice).
EVAL_KINDS = ("sft", "grpo", "dpo", "steps")
# Below these a macro-F1 (or CumPT's beta) moves by several points when a handful of rows change: say so.
MIN_ROWS = 100
MIN_PER_CLASS = 10

@dataclass
class EvalOptions:
    split: str = "test"
    mode: Mode | None = None  # None: label-prob for label_first exports, generate otherwise
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 256
    cumpt: bool = False
    tiers: dict[str, list[str]] | None = None  # tier -> grades for this scheme (training.tiers)
    calibration_split: str = "validation"


@dataclass
class EvalResult:
    model: str
    dataset: dict[str, Any]
    split: str
    mode: Mode
    metrics: Metrics
    seconds: float
    rows_per_s: float
    cumpt: dict[str, Any] | None = None
    predictions: list[Prediction] = field(default_factory=list)
    rows_from: str = EVAL_SET
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Everything but the per-row predictions."""
        return {"model": self.model, "dataset": self.dataset, "split": self.split, "mode": self.mode,
                "rows_from": self.rows_from, "metrics": self.metrics.to_dict(), "cumpt": self.cumpt,
                "warnings": self.warnings, "seconds": round(self.seconds, 2), "rows_per_s": round(self.rows_per_s, 3)}


def eval_sets(version: ExportedVersion) -> list[str]:
    """The `eval` set when the version has one, else the older union of the training sets."""
    return [EVAL_SET] if EVAL_SET in version.kinds else [k for k in EVAL_KINDS if k in version.kinds]


def rows_from(version: ExportedVersion) -> str:
    """What the scored rows are, in words, for reports."""
    if EVAL_SET in version.kinds:
        return "every labelled pair of the split (eval set)"
    return f"pairs some selection kept ({' + '.join(eval_sets(version))}); re-export for every labelled pair"


def small_sample_warnings(golds: list[str], scheme: LabelScheme, what: str) -> list[str]:
    """One line per reason the figure on these rows means little: too few rows, or too few of a grade."""
    out = []
    if len(golds) < MIN_ROWS:
        out.append(f"{what}: n = {len(golds)} rows (< {MIN_ROWS}); a few rows more or less move the figure by points")
    thin = [f"{g} {golds.count(g)}" for g in scheme.ids if golds.count(g) < MIN_PER_CLASS]
    if thin:
        out.append(f"{what}: fewer than {MIN_PER_CLASS} rows of {', '.join(thin)}; their F1 (and macro-F1) is noise")
    return out


def eval_rows(version: ExportedVersion, split: str, limit: int | None) -> list[dict[str, Any]]:
    """prompt, label and pair_id of every pair in the split: from the `eval` set, else over the training sets
    that hold it (first set wins)."""
    kinds = eval_sets(version)
    if not kinds:
        raise CotgenError(f"{version.path}: no set with prompts and labels to evaluate on (it has: {', '.join(version.kinds)})")
    rows: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        sets = version.load(kind)
        if split not in sets or not {"prompt", "label", "pair_id"} <= set(sets[split].column_names):
            continue
        for row in sets[split].select_columns(["prompt", "label", "pair_id"]).to_list():
            rows.setdefault(row["pair_id"], row)
    if not rows:
        raise CotgenError(f"{version.name}@v{version.version}: no rows in split '{split}' of {', '.join(kinds)}")
    unknown = sorted({r["label"] for r in rows.values()} - set(version.scheme.ids))
    if unknown:
        raise CotgenError(f"{version.path}: split {split}: label: {unknown} not in scheme {version.scheme.name}")
    ordered = sorted(rows.values(), key=lambda r: r["pair_id"])
    return ordered[:limit] if limit is not None else ordered


def choose_mode(version: ExportedVersion, mode: Mode | None) -> Mode:
    if mode is None:
        return "label-prob" if version.order == "label_first" else "generate"
    if mode == "label-prob" and version.order != "label_first":
        raise CotgenError(f"--mode label-prob needs a label_first export; {version.name}@v{version.version} is "
                          f"{version.order} (the label comes after the reasoning there)")
    return mode


def predict(lm: LoadedModel, version: ExportedVersion, rows: list[dict[str, Any]], mode: Mode, opts: EvalOptions,
            progress: Progress | None = None) -> list[Prediction]:
    if mode == "label-prob":
        return label_prob_predictions(lm, rows, version.scheme, opts.batch_size, progress)
    return generate_predictions(lm, rows, version.scheme, opts.max_new_tokens, opts.batch_size, progress)


def _cumpt(lm: LoadedModel, version: ExportedVersion, test: list[Prediction], opts: EvalOptions,
           progress: Progress | None) -> dict[str, Any]:
    tiers = build_tiers(version.scheme, opts.tiers)
    val_rows = eval_rows(version, opts.calibration_split, opts.limit)
    val = label_prob_predictions(lm, val_rows, version.scheme, opts.batch_size, progress)
    cal = calibrate_beta([p.probs or {} for p in val], [p.gold for p in val], version.scheme, tiers)
    warnings = small_sample_warnings([p.gold for p in val], version.scheme, f"CumPT beta ({opts.calibration_split})")
    at_beta = tier_metrics([p.probs or {} for p in test], [p.gold for p in test], version.scheme, tiers, cal.beta)
    return {"beta": cal.beta, "calibrated_on": opts.calibration_split, "validation_rows": len(val),
            "validation_macro_f1": cal.validation_macro_f1, "candidates": cal.candidates,
            "tiers": {t: [g for g in version.scheme.ids if tiers.tier(g) == t] for t in tiers.names},
            "metrics": at_beta.to_dict(), "warnings": warnings}


def evaluate(model_ref: str, version: ExportedVersion, opts: EvalOptions,
             progress: Progress | None = None) -> EvalResult:
    mode = choose_mode(version, opts.mode)
    if opts.cumpt and mode != "label-prob":
        raise CotgenError("--cumpt needs label probabilities: use --mode label-prob on a label_first export")
    rows = eval_rows(version, opts.split, opts.limit)
    lm = load_model(model_ref)
    started = time.monotonic()
    preds = predict(lm, version, rows, mode, opts, progress)
    seconds = time.monotonic() - started
    metrics = scheme_metrics([p.gold for p in preds], [p.predicted for p in preds], version.scheme)
    cumpt = _cumpt(lm, version, preds, opts, progress) if opts.cumpt else None
    warnings = small_sample_warnings([p.gold for p in preds], version.scheme, f"{opts.split} split")
    if EVAL_SET not in version.kinds:
        warnings.append(f"{version.name}@v{version.version} has no eval set: scored {rows_from(version)}")
    return EvalResult(model=model_ref, dataset={**version.lineage(), "split": opts.split}, split=opts.split,
                      mode=mode, metrics=metrics, seconds=seconds, rows_per_s=len(preds) / max(seconds, 1e-9),
                      cumpt=cumpt, predictions=preds, rows_from=rows_from(version), warnings=warnings)


def plot_confusion(metrics: Metrics, title: str, path: Path) -> None:
    """Rows gold, columns predicted, with an extra column for answers that did not parse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*metrics.labels, "unparsed"]
    grid = [row + [miss] for row, miss in zip(metrics.confusion, metrics.unparsed_by_gold, strict=True)]
    fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 2, 1.1 * len(metrics.labels) + 1.5))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(metrics.labels)), metrics.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title, fontsize=9)
    peak = max((v for row in grid for v in row), default=0)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: EvalResult, out_dir: Path) -> dict[str, str]:
    """metrics.json (summary), predictions.jsonl (one row per pair) and confusion.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out_dir / "metrics.json", "predictions": out_dir / "predictions.jsonl",
             "confusion": out_dir / "confusion.png"}
    paths["metrics"].write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
    with paths["predictions"].open("w", encoding="utf-8") as f:
        for p in result.predictions:
            f.write(json.dumps(asdict(p)) + "\n")
    title = f"{Path(result.model).name} on {result.dataset['name']}@v{result.dataset['version']}:{result.split}"
    plot_confusion(result.metrics, title, paths["confusion"])
    return {k: str(v) for k, v in paths.items()}
