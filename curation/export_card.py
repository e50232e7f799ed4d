"""The dataset card (README.md) of an exported version: Hugging Face YAML front matter plus statistics."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import yaml

from curation.difficulty import describe_bins
from curation.report import plots_markdown
from curation.select_dpo import CASES as DPO_CASES
from schemas.config import DifficultyBins

KIND_TEXT = {
    "sft": "stage 1 SFT: conversational `prompt`/`completion` from teacher CoT that parses cleanly, agrees with the "
           "gold label, is consistent and passes the quality gates (CoT also in `reasoning_content`)",
    "dpo": "stage 2 DPO: conversational `prompt`/`chosen`/`rejected` from the policy's own right and wrong answers "
           "(teacher CoT as `chosen` where all answers were wrong)",
    "grpo": "stage 3 GRPO: `prompt` with the gold `label` for the reward, kept where 0 < c < gamma*n, class-balanced",
    "steps": "step labels: `prompt`, `completions` (the CoT steps), `labels` (one bool per step) and `label_sources` "
             "(human: a reviewer's mark or accept; judge: the step judge's verdict, used where no human labelled the step)",
    "eval": "evaluation: every labelled pair of each split, `prompt` (the policy prompt) and the gold `label`, "
            "whether or not a selection kept it; `cotgen eval` scores the test split",
}
# What each reason in dropped.parquet means; the card defines every reason it counts.
REASON_TEXT = {
    "review_rejected": "an annotator rejected the sample",
    "parse_failed": "the answer did not parse cleanly (no label, or steps missing)",
    "disagrees_with_gold": "the answer's label is not the gold label (after reviews)",
    "inconsistent": "the judgement step argues for another grade than the label",
    "wrong_steps": "right label, but a step labelled wrong by a reviewer or the step judge (curation.sft_drop_wrong_steps)",
    "too_short": "the rendered target is shorter than curation.sft_min_chars",
    "too_long": "the rendered target is longer than curation.sft_max_chars",
    "near_duplicate": "nearly repeats reasoning already kept (curation.diversity_threshold)",
    "over_per_pair": "the pair already has curation.sft_per_pair rows",
    "balanced_out": "left out to balance the labels (curation.sft_balance / grpo_balance)",
    "all_correct": "every answer of the pair was right: nothing to learn from a preference or a group",
    "all_wrong": "no answer of the pair was right (c = 0): a GRPO group with no signal",
    "too_easy": "c >= gamma * n: above the GRPO window",
    "no_chosen": "wrong answers, no clean right one, and no teacher answer to stand in",
    "steps_unlabelled": "some step has no reviewer mark or judge verdict and the sample was not accepted",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _teacher(m: dict[str, Any], quality: dict[str, dict[str, Any]]) -> str:
    """Intrinsic quality of the teacher runs, and which of them were shown the gold label."""
    shown = {r["name"] for r in m.get("runs", []) if r.get("gold_shown")}
    rows = [[name + (" (gold shown)" if name in shown else ""),
             q["samples"] if q["samples"] == q["of"] else f"{q['samples']:,} of {q['of']:,}", _pct(q["truncation_rate"]),
             _pct(q["repetition_rate"]), _pct(q["steps_present_rate"]), _pct(q["contradiction_rate"]),
             "-" if q["mean_step_chars"] is None else f"{q['mean_step_chars']:.0f}", _pct(q["clean_rate"]),
             _pct(q.get("judged_wrong_rate"))]
            for name, q in quality.items()]
    note = ("\n\n**Gold shown**: the teacher's prompt gave it the gold label (`explain_gold`), so its agreement with "
            "gold is label compliance, not accuracy." if shown else "")
    return ("## Teacher runs\n\nWhat the teacher's texts look like, over its samples (a seeded sample of a large run; "
            "gold not used): cut at "
            "max_tokens, one word n-gram repeated more than `curation.max_ngram_repeats` times, all five steps "
            "present, judgement contradicting the label, characters per step, clean parses, and steps the step judge "
            "(`cotgen judge`) graded wrong.\n\n"
            + _table(["run", "samples", "truncated", "repetitive", "5 steps", "contradictions", "chars/step",
                      "clean parse", "judged wrong"], rows) + note)


def _dropped(dropped: dict[str, Any]) -> str:
    counts: dict[str, dict[str, int]] = dropped.get("counts", {})
    if not any(counts.values()):
        return "## Dropped rows\n\nThe selections left nothing out."
    rows = [[kind, reason, n, REASON_TEXT.get(reason, "")] for kind, by in counts.items() for reason, n in by.items()]
    return (f"## Dropped rows\n\nEvery row the selections left out is listed in `{dropped['file']}` (kind, sample id "
            "or pair id, reason); counts per reason:\n\n" + _table(["kind", "reason", "rows", "meaning"], rows))


def _features(schema: pa.Schema) -> list[dict[str, Any]]:
    from datasets import Features

    return Features.from_arrow_schema(schema.remove(schema.get_field_index("split")))._to_yaml_list()


def front_matter(manifest: dict[str, Any], schemas: dict[str, pa.Schema]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = manifest["counts"]
    return {
        "pretty_name": f"{manifest['name']} v{manifest['version']}",
        "language": ["en"],
        "license": "other",
        "task_categories": ["text-generation", "text-classification"],
        "tags": ["cotgen", "chain-of-thought", "search-relevance", "trl"],
        "configs": [
            {"config_name": kind,
             "data_files": [{"split": s, "path": f"data/{kind}/{s}.parquet"} for s, n in splits.items() if n]}
            for kind, splits in counts.items()
        ],
        "dataset_info": [
            {"config_name": kind, "features": _features(schemas[kind]),
             "splits": [{"name": s, "num_examples": n} for s, n in splits.items() if n]}
            for kind, splits in counts.items()
        ],
    }


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _distribution(title: str, by_kind: dict[str, dict[str, int]]) -> str:
    keys = sorted({k for d in by_kind.values() for k in d})
    return f"### {title}\n\n" + _table(["kind", *keys], [[kind, *(d.get(k, 0) for k in keys)] for kind, d in by_kind.items()])


def _body(m: dict[str, Any]) -> str:
    counts: dict[str, dict[str, int]] = m["counts"]
    splits = list(dict.fromkeys(s for c in counts.values() for s in c))
    stats = m.get("statistics", {})
    parts = [
        f"# {m['name']} v{m['version']}",
        "Chain-of-thought training data for e-commerce query-item relevance, built by cotgen "
        "(TaoSR1 / TaoSR-SHE recipe). Formats are TRL's own; each config is a `DatasetDict` saved with "
        "`save_to_disk` under `<kind>/` and Parquet under `data/<kind>/`.",
        "\n".join(f"- `{k}`: {KIND_TEXT[k]}" for k in counts),
        "## Rows\n\n" + _table(["kind", *splits, "total"],
                               [[k, *(c.get(s, 0) for s in splits), sum(c.values())] for k, c in counts.items()]),
        "Splits are grouped by query (no query in two splits), stratified by label and seeded; a query keeps its "
        f"split in later versions (`{m['splits']['file']}`).",
        _distribution("Labels", stats.get("labels", {})),
        _distribution("Difficulty (policy run)", stats.get("difficulty", {})),
        f"Difficulty: {describe_bins(DifficultyBins(**m['config']['curation']['difficulty']))}.",
    ]
    if stats.get("teacher_quality"):
        parts.append(_teacher(m, stats["teacher_quality"]))
    if stats.get("policy_pass_at_k"):
        ks = list(stats["policy_pass_at_k"])
        parts.append("### Policy pass@k\n\nOver the policy run's pairs, counting clean right answers (parsed ok, label = "
                     "gold) as right.\n\n" + _table([f"pass@{k}" for k in ks],
                                                       [[f"{stats['policy_pass_at_k'][k]:.1%}" for k in ks]]))
    grpo = m.get("selection", {}).get("grpo")
    if grpo:
        parts.append(f"GRPO label distribution, coefficient of variation: {grpo['cv_before']:.3f} before balancing, "
                     f"{grpo['cv_after']:.3f} after.")
    dpo = m.get("selection", {}).get("dpo")
    if dpo and dpo.get("policy_in_format") is False:
        parts.append("The policy run was prompted for the other answer order, so none of its answers is a DPO chosen "
                     "one (the teacher's answer stands in).")
    if dpo and dpo["pairs_by_case"]:
        parts.append("### DPO pairs by case\n\n" + _table(
            ["case", "pairs", "meaning"], [[k, v, DPO_CASES.get(k, "")] for k, v in dpo["pairs_by_case"].items()]))
    if m.get("dropped"):
        parts.append(_dropped(m["dropped"]))
    parts.append(plots_markdown())
    scheme = m.get("scheme") or {}
    if scheme:
        parts.append(f"## Label scheme `{scheme['name']}` (best first)\n\n" + _table(
            ["id", "name", "meaning"], [[g["id"], g["name"], g["meaning"]] for g in scheme["grades"]]))
    parts.append(f"Answer format: `{m['format']}` (`Label: <id>` {'first' if m['format'] == 'label_first' else 'last'}, "
                 "five numbered steps).")
    runs = m.get("runs", [])
    parts.append("## Lineage\n\n" + _table(["run", "role", "model", "prompt", "prompt hash"],
                                           [[r["name"], r["role"], r["model"], r["prompt_name"], r["prompt_hash"][:12]]
                                            for r in runs])
                 + f"\n\nContent hash `{m['content_hash']}`; parent version: {m['parent'] or 'none'}; "
                   f"cotgen {m['toolkit_version']}; created {m['created_at']}.")
    parts.append("## Loading\n\n```python\nfrom datasets import load_from_disk\n"
                 f"ds = load_from_disk(\"datasets/{m['name']}/v{m['version']}/{next(iter(counts))}\")\n```")
    return "\n\n".join(parts) + "\n"


def render_card(manifest: dict[str, Any], schemas: dict[str, pa.Schema]) -> str:
    yaml_text = yaml.safe_dump(front_matter(manifest, schemas), sort_keys=False, allow_unicode=True)
    return f"---\n{yaml_text}---\n\n{_body(manifest)}"
