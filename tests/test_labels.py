"""Label schemes: built-ins, raw mapping, numeric bins, user schemes."""

import pytest
from pydantic import ValidationError

from schemas.labels import BUILTIN_SCHEMES, LabelScheme, resolve_scheme


def test_taosr4_order_and_binary_view():
    s = BUILTIN_SCHEMES["taosr4"]
    assert s.ids == ["L4", "L3", "L2", "L1"]
    assert [s.is_relevant(g) for g in s.ids] == [True, True, False, False]
    assert s.rank("L4") == 0 and s.rank("L1") == 3


@pytest.mark.parametrize(("raw", "grade"), [("4", "L4"), (" 1 ", "L1"), ("L3", "L3"), ("excellent", "L4"), ("7", None)])
def test_crowdflower_mapping(raw, grade):
    assert BUILTIN_SCHEMES["crowdflower"].map_raw(raw) == grade


@pytest.mark.parametrize(("raw", "grade"), [("E", "E"), ("exact", "E"), ("Complement", "C"), ("i", "I"), ("X", None)])
def test_esci_mapping(raw, grade):
    assert BUILTIN_SCHEMES["esci"].map_raw(raw) == grade


@pytest.mark.parametrize(("raw", "grade"), [("1", "H1"), ("1.33", "H1"), ("1.67", "H2"), ("2.33", "H2"),
                                            ("2.67", "H3"), ("3", "H3"), ("3.5", None), ("abc", None)])
def test_homedepot_bins(raw, grade):
    assert BUILTIN_SCHEMES["homedepot"].map_raw(raw) == grade


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
