"""Label schemes: built-ins, raw mapping and numeric bins (through the SQL mapping ingest uses), user schemes."""

import csv
from pathlib import Path

import pytest
from pydantic import ValidationError

from curation.ingest import ingest
from curation.store import Store
from schemas.config import SourceConfig
from schemas.labels import BUILTIN_SCHEMES, LabelScheme, resolve_scheme


def test_taosr4_order_and_binary_view():
    s = BUILTIN_SCHEMES["taosr4"]
    assert s.ids == ["L4", "L3", "L2", "L1"]
    assert [s.is_relevant(g) for g in s.ids] == [True, True, False, False]
    assert s.rank("L4") == 0 and s.rank("L1") == 3


def ingested_grades(tmp_path: Path, scheme: LabelScheme, raws: list[str]) -> list[str | None]:
    """Ingest one row per raw label into a real store; the grade each row got (None: rejected)."""
    path = tmp_path / "labels.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["query", "title", "label"])
        writer.writerows([f"query {i}", f"title {i}", raw] for i, raw in enumerate(raws))
    with Store(tmp_path / "store.duckdb") as store:
        source = SourceConfig(name="labels", path=str(path), scheme=scheme.name)
        report = ingest(store, source, scheme, skip_bad=True, rejects_dir=tmp_path)
        by_row = dict(store.rows("SELECT source_row, label FROM pairs"))
    assert report.rejected == sum(1 for row in range(len(raws)) if row + 2 not in by_row)
    return [by_row.get(row + 2) for row in range(len(raws))]  # CSV row numbers count the header


CROWDFLOWER = [("4", "L4"), (" 1 ", "L1"), ("L3", "L3"), ("excellent", "L4"), ("7", None)]
ESCI = [("E", "E"), ("exact", "E"), ("Complement", "C"), ("i", "I"), ("X", None)]
# Home Depot's mean of 1-3 ratings: the bin edges 1.5 and 2.5 belong to the upper bin, 3 to the top one.
HOMEDEPOT = [("1", "H1"), ("1.33", "H1"), ("1.5", "H2"), ("1.67", "H2"), ("2.33", "H2"), ("2.5", "H3"),
             ("2.67", "H3"), ("3", "H3"), ("3.5", None), ("0.5", None), ("abc", None)]


@pytest.mark.parametrize(("scheme", "cases"), [("crowdflower", CROWDFLOWER), ("esci", ESCI), ("homedepot", HOMEDEPOT)])
def test_raw_labels_map_through_ingest(tmp_path, scheme, cases):
    raws, grades = zip(*cases, strict=True)
    assert ingested_grades(tmp_path, BUILTIN_SCHEMES[scheme], list(raws)) == list(grades)


def test_scheme_rejects_unknown_grades():
    with pytest.raises(ValidationError, match="unknown grades"):
        LabelScheme(name="x", grades=[{"id": "A", "name": "a", "meaning": ""}, {"id": "B", "name": "b", "meaning": ""}],
                    relevant=["C"])


def test_user_scheme_wins_over_builtin():
    mine = LabelScheme(name="esci", grades=[{"id": "R", "name": "R", "meaning": ""}, {"id": "N", "name": "N", "meaning": ""}],
                       relevant=["R"])
    assert resolve_scheme("esci", {"esci": mine}).ids == ["R", "N"]
    with pytest.raises(KeyError, match="unknown label scheme"):
        resolve_scheme("nope")
