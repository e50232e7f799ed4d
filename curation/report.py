"""The data report: what a store (or a dataset version) holds, as numbers and as PNG plots (matplotlib).

Five plots, always written under fixed names so a dataset card can embed them: labels per split,
difficulty per policy run, pass@k per run, teacher agreement per gold label, most-retrieved rules.
A plot with no data yet says so instead of being left out. Each title says what it was computed on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.queries import sql
from curation.stats import resolve_runs, run_stats
from curation.store import Store, registered

# file name -> caption; the order is the card's
PLOTS: dict[str, str] = {
    "labels_by_split.png": "Gold labels per split",
    "difficulty.png": "Difficulty per policy run",
    "pass_at_k.png": "pass@k per run",
    "teacher_agreement.png": "Teacher agreement per gold label",
    "top_rules.png": "Most-retrieved rules",
}
PLOTS_DIR = "plots"
DIFFICULTY_ORDER = ("easy", "medium", "hard", "unsolved")
TOP_RULES = 15


@dataclass
class Agreement:
    """A teacher run's agreement with gold per gold label; with gold shown it is label compliance."""

    gold_shown: bool
    by_label: dict[str, float] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)


@dataclass
class ReportData:
    """The figures behind the plots (the --json form of the report)."""

    labels_by_split: dict[str, dict[str, int]] = field(default_factory=dict)
    difficulty: dict[str, dict[str, int]] = field(default_factory=dict)
    pass_at_k: dict[str, dict[int, float]] = field(default_factory=dict)
    run_pairs: dict[str, int] = field(default_factory=dict)
    agreement: dict[str, Agreement] = field(default_factory=dict)
    rules: list[tuple[str, int]] = field(default_factory=list)
    retrieval_pairs: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pass_at_k"] = {run: {str(k): v for k, v in ks.items()} for run, ks in self.pass_at_k.items()}
        out["rules"] = [{"rule": r, "pairs": n} for r, n in self.rules]
        return out


def report_data(store: Store, splits: pa.Table | None = None, runs: list[str] | None = None) -> ReportData:
    """The report's figures: over every pair and run, or a version's split assignment and runs."""
    data = ReportData()
    if splits is not None:
        with registered(store, "report_splits", splits.select(["query_id", "split"])):
            label_rows = store.rows(sql("report.labels_by_split"))
    else:
        label_rows = store.rows(sql("report.labels_all"))
    for split, label, n in label_rows:
        data.labels_by_split.setdefault(split, {})[label] = int(n)
    picked = resolve_runs(store, runs or None)
    for stats in run_stats(store, picked):
        data.pass_at_k[stats.name] = dict(stats.pass_at_k)
        data.run_pairs[stats.name] = stats.pairs
        if stats.role == "teacher":
            data.agreement[stats.name] = Agreement(stats.gold_shown, {s.label: s.accuracy for s in stats.labels},
                                                   {s.label: s.pairs for s in stats.labels})
    for name, difficulty, n in store.rows(sql("report.difficulty"), {"runs": [r.name for r in picked]}):
        data.difficulty.setdefault(name, {})[difficulty] = int(n)
    data.rules = [(r, int(n)) for r, n in store.rows(sql("report.cited_rules"), {"limit": TOP_RULES})]
    data.retrieval_pairs = int(store.scalar(sql("report.retrieval_pairs")) or 0)
    return data


def _figure(title: str, wide: bool = False):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8 if wide else 6.4, 4.2), dpi=100)
    ax.set_title(title, fontsize=10, loc="left")
    return fig, ax


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, color="0.4", transform=ax.transAxes)
    ax.set_axis_off()


def _grouped_bars(ax, groups: dict[str, dict[str, float]], keys: list[str], ylabel: str, percent: bool) -> None:
    width = 0.8 / max(len(groups), 1)
    for i, (group, values) in enumerate(groups.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(keys))]
        ax.bar(xs, [values.get(k, 0) for k in keys], width=width, label=group)
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel(ylabel)
    if percent:
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.legend(fontsize=8, frameon=False)


def _labels_plot(ax, data: ReportData) -> None:
    if not data.labels_by_split:
        return _empty(ax, "no labelled pairs yet")
    labels = sorted({g for d in data.labels_by_split.values() for g in d})
    shares = {f"{split} (n={sum(d.values()):,})": {g: n / sum(d.values()) for g, n in d.items()}
              for split, d in data.labels_by_split.items()}
    _grouped_bars(ax, shares, labels, "share of pairs", percent=True)


def _difficulty_plot(ax, data: ReportData) -> None:
    if not data.difficulty:
        return _empty(ax, "no policy run with difficulty yet\n(cotgen curate difficulty)")
    counts = {f"{run} (n={sum(d.values()):,})": {k: float(v) for k, v in d.items()} for run, d in data.difficulty.items()}
    _grouped_bars(ax, counts, list(DIFFICULTY_ORDER), "pairs", percent=False)


def _pass_plot(ax, data: ReportData) -> None:
    runs = {r: ks for r, ks in data.pass_at_k.items() if ks}
    if not runs:
        return _empty(ax, "no generation run yet")
    for run, ks in runs.items():
        xs = sorted(ks)
        ax.plot(xs, [ks[k] for k in xs], marker="o", label=f"{run} (n={data.run_pairs.get(run, 0):,} pairs)")
    ax.set_xlabel("k (samples per pair)")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, frameon=False)


def _agreement_plot(ax, data: ReportData) -> None:
    if not data.agreement:
        return _empty(ax, "no teacher run yet")
    labels = sorted({g for a in data.agreement.values() for g in a.by_label})
    groups = {f"{run} ({'gold shown: label compliance' if a.gold_shown else 'gold hidden: accuracy'}, "
              f"n={sum(a.pairs.values()):,})": a.by_label for run, a in data.agreement.items()}
    _grouped_bars(ax, groups, labels, "samples agreeing with gold", percent=True)


def _rules_plot(ax, data: ReportData) -> None:
    if not data.rules:
        return _empty(ax, "no retrieved rules yet (teacher prompts store them)")
    names = [r for r, _ in reversed(data.rules)]
    ax.barh(names, [n for _, n in reversed(data.rules)])
    ax.set_xlabel(f"pairs the rule was retrieved for (of {data.retrieval_pairs:,})")
    ax.tick_params(axis="y", labelsize=8)


def _titles(data: ReportData, scope: str) -> dict[str, str]:
    n_pairs = sum(sum(d.values()) for d in data.labels_by_split.values())
    return {
        "labels_by_split.png": f"Gold labels per split ({scope}, {n_pairs:,} pairs, reviews applied)",
        "difficulty.png": f"Difficulty per policy run ({scope}; bins of the correct count c of n)",
        "pass_at_k.png": f"pass@k per run ({scope}; right = label read equals gold)",
        "teacher_agreement.png": f"Teacher agreement per gold label ({scope})",
        "top_rules.png": f"Most-retrieved rules (top {TOP_RULES}, {data.retrieval_pairs:,} pairs)",
    }


def write_plots(data: ReportData, out_dir: Path, scope: str = "whole store") -> list[Path]:
    """The five PNGs under `out_dir` (names from PLOTS); `scope` says in each title what they cover."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    draw = {"labels_by_split.png": _labels_plot, "difficulty.png": _difficulty_plot, "pass_at_k.png": _pass_plot,
            "teacher_agreement.png": _agreement_plot, "top_rules.png": _rules_plot}
    titles = _titles(data, scope)
    written = []
    for name in PLOTS:
        fig, ax = _figure(titles[name], wide=name == "teacher_agreement.png")
        draw[name](ax, data)
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, format="png", metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def write_report(store: Store, out_dir: Path, splits: pa.Table | None = None, runs: list[str] | None = None,
                 scope: str = "whole store") -> list[Path]:
    """Compute the report's figures and write its PNGs into `out_dir`; returns their paths."""
    return write_plots(report_data(store, splits, runs), out_dir, scope)


def plots_markdown(folder: str = PLOTS_DIR) -> str:
    """The card section that embeds the plots (Hugging Face renders relative image links in a card)."""
    return "## Plots\n\n" + "\n\n".join(f"![{caption}]({folder}/{name})" for name, caption in PLOTS.items())
