"""`cotgen review stats`: rates, time per item, gold accuracy, and Cohen's kappa checked against scikit-learn."""

from __future__ import annotations

import json
import random
from pathlib import Path

import helpers_review
import pytest
from helpers_review import seed_samples
from sklearn.metrics import cohen_kappa_score

from curation.review.stats import cohen_kappa

example_template = helpers_review.example_template  # shared fixtures
review_ws = helpers_review.review_ws


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_sklearn(seed: int) -> None:
    rng = random.Random(seed)
    cats = ["L4", "L3", "L2", "L1"][: rng.randint(2, 4)]
    a = [rng.choice(cats) for _ in range(rng.randint(5, 60))]
    b = [x if rng.random() < 0.6 else rng.choice(cats) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_kappa_undefined_cases() -> None:
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is 1: kappa is 0/0
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)


def test_stats_on_a_constructed_overlap(review_ws: Path, tmp_path: Path, cli) -> None:
    ws = review_ws
    samples = [s for s in seed_samples(ws, per_pair=1) if s.parse_status == "ok"][:24]
    rng = random.Random(7)
    grades = ["L4", "L3", "L2", "L1"]
    records, labels_a, labels_b, dec_a, dec_b = [], [], [], [], []
    for i, s in enumerate(samples):
        # alice and bob both review every item: each accepts or rejects and may relabel the pair.
        la = s.gold if rng.random() < 0.6 else rng.choice(grades)
        lb = la if rng.random() < 0.7 else rng.choice(grades)
        da = "accept" if rng.random() < 0.6 else "reject"
        db = da if rng.random() < 0.75 else ("reject" if da == "accept" else "accept")
        for who, label, dec in (("alice", la, da), ("bob", lb, db)):
            if label != s.gold:
                records.append({"annotator": who, "action": "relabel", "sample_id": s.sample_id,
                                "new_label": label, "reason": "gold_wrong"})
            records.append({"annotator": who, "action": dec, "sample_id": s.sample_id, "seconds": 2.0 + i,
                            "reason": "wrong_label" if dec == "reject" else ""})
        labels_a.append(la)
        labels_b.append(lb)
        dec_a.append(da)
        dec_b.append(db)
    records.append({"annotator": "carol", "action": "accept", "sample_id": samples[0].sample_id, "seconds": 4.0})
    records.append({"annotator": "carol", "action": "skip", "sample_id": samples[1].sample_id})
    path = tmp_path / "overlap.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    cli("review", "import", str(path), "-w", str(ws))
    gold_file = tmp_path / "gold.csv"
    trusted = {s.pair_id: s.gold for s in samples[:6]}
    gold_file.write_text("pair_id,label\n" + "".join(f"{p},{label}\n" for p, label in trusted.items()))
    cli("review", "gold", str(gold_file), "-w", str(ws), "--by", "lead")

    stats = json.loads(cli("review", "stats", "-w", str(ws), "--json").stdout)
    by = {s["annotator"]: s for s in stats["annotators"]}
    alice = by["alice"]
    assert alice["items"] == 24 and alice["skipped"] == 0
    assert alice["accept_rate"] == round(dec_a.count("accept") / 24, 4)
    assert alice["reject_rate"] == round(dec_a.count("reject") / 24, 4)
    assert alice["relabel_rate"] == round(sum(la != s.gold for la, s in zip(labels_a, samples, strict=True)) / 24, 4)
    assert alice["median_seconds"] == pytest.approx(2.0 + 11.5)
    assert alice["gold_items"] == 6
    assert alice["gold_label_accuracy"] == round(sum(labels_a[i] == samples[i].gold for i in range(6)) / 6, 4)
    assert (by["carol"]["items"], by["carol"]["skipped"]) == (1, 1)

    ab = next(a for a in stats["agreement"] if (a["annotator_a"], a["annotator_b"]) == ("alice", "bob"))
    assert ab["items"] == 24 and ab["decision_items"] == 24
    assert ab["label_kappa"] == pytest.approx(cohen_kappa_score(labels_a, labels_b), abs=1e-4)
    assert ab["decision_kappa"] == pytest.approx(cohen_kappa_score(dec_a, dec_b), abs=1e-4)
    ac = next(a for a in stats["agreement"] if (a["annotator_a"], a["annotator_b"]) == ("alice", "carol"))
    assert ac["items"] == 1

    table = cli("review", "stats", "-w", str(ws)).stdout
    assert "alice / bob" in table and "kappa" in table
