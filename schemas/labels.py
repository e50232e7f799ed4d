"""Label schemes: ordered grades, their meanings, the binary view and raw-value mapping."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class Grade(BaseModel):
    """One grade of a scheme. `id` is the token models read and write (e.g. "L4")."""

    id: str
    name: str
    meaning: str


class Bin(BaseModel):
    """Numeric raw values v with low <= v < high map to `grade` (high is inclusive for the last bin)."""

    low: float
    high: float
    grade: str


class LabelScheme(BaseModel):
    """Ordered grades (best first), the relevant set, and how a source's raw values map onto grades."""

    name: str
    grades: list[Grade] = Field(min_length=2)
    relevant: list[str]
    mapping: dict[str, str] = Field(default_factory=dict)
    bins: list[Bin] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LabelScheme:
        ids = self.ids
        if len(set(ids)) != len(ids):
            raise ValueError(f"scheme {self.name}: grade ids must be unique, got {ids}")
        for where, values in (("relevant", self.relevant), ("mapping", self.mapping.values()),
                              ("bins", [b.grade for b in self.bins])):
            unknown = sorted(set(values) - set(ids))
            if unknown:
                raise ValueError(f"scheme {self.name}: {where} names unknown grades {unknown}; grades are {ids}")
        return self

    @property
    def ids(self) -> list[str]:
        return [g.id for g in self.grades]

    def grade(self, grade_id: str) -> Grade:
        for g in self.grades:
            if g.id == grade_id:
                return g
        raise KeyError(grade_id)

    def rank(self, grade_id: str) -> int:
        """0 for the best grade, len-1 for the worst."""
        return self.ids.index(grade_id)

    def is_relevant(self, grade_id: str) -> bool:
        return grade_id in self.relevant

    def raw_lookup(self) -> dict[str, str]:
        """Every accepted spelling of a raw value (grade ids, names, mapping keys), lower-cased."""
        table = {g.id.lower(): g.id for g in self.grades}
        table.update({g.name.lower(): g.id for g in self.grades})
        table.update({k.strip().lower(): v for k, v in self.mapping.items()})
        return table


_TAOSR4_GRADES = [
    Grade(id="L4", name="Excellent", meaning="The item is exactly what the query asks for: category and every stated attribute match."),
    Grade(id="L3", name="Related", meaning="Right category and intent, but a secondary attribute differs or is unstated."),
    Grade(id="L2", name="Mismatch", meaning="Same broad area, but the category or a key attribute the query asks for is wrong."),
    Grade(id="L1", name="Irrelevant", meaning="The item does not serve the query at all."),
]

BUILTIN_SCHEMES: dict[str, LabelScheme] = {
    "taosr4": LabelScheme(name="taosr4", grades=_TAOSR4_GRADES, relevant=["L4", "L3"]),
    "crowdflower": LabelScheme(
        name="crowdflower", grades=_TAOSR4_GRADES, relevant=["L4", "L3"],
        mapping={"4": "L4", "3": "L3", "2": "L2", "1": "L1"},
    ),
    "esci": LabelScheme(
        name="esci",
        grades=[
            Grade(id="E", name="Exact", meaning="The item is relevant for the query and satisfies all its specifications."),
            Grade(id="S", name="Substitute", meaning="Somewhat relevant: it fails some aspects of the query but can serve as a functional substitute."),
            Grade(id="C", name="Complement", meaning="It does not fulfil the query but could be used together with an exact item."),
            Grade(id="I", name="Irrelevant", meaning="Irrelevant for the query, or fails a central aspect of it."),
        ],
        relevant=["E", "S"],
        mapping={"exact": "E", "substitute": "S", "complement": "C", "irrelevant": "I"},
    ),
    "wands": LabelScheme(
        name="wands",
        grades=[
            Grade(id="Exact", name="Exact", meaning="The product fully matches the query."),
            Grade(id="Partial", name="Partial", meaning="The product matches the query's intent in part, e.g. right type but a differing attribute."),
            Grade(id="Irrelevant", name="Irrelevant", meaning="The product does not match the query."),
        ],
        relevant=["Exact", "Partial"],
    ),
    "homedepot": LabelScheme(
        name="homedepot",
        grades=[
            Grade(id="H3", name="Perfect match", meaning="The product is exactly what the search asks for."),
            Grade(id="H2", name="Partially relevant", meaning="The product matches part of the search, e.g. right type but another brand or size."),
            Grade(id="H1", name="Irrelevant", meaning="The product does not serve the search; accessories count as irrelevant here."),
        ],
        relevant=["H3", "H2"],
        bins=[Bin(low=1.0, high=1.5, grade="H1"), Bin(low=1.5, high=2.5, grade="H2"), Bin(low=2.5, high=3.0, grade="H3")],
    ),
}


def resolve_scheme(name: str, user_schemes: dict[str, LabelScheme] | None = None) -> LabelScheme:
    """A user scheme from cotgen.toml wins over a built-in of the same name."""
    schemes = {**BUILTIN_SCHEMES, **(user_schemes or {})}
    if name not in schemes:
        raise KeyError(f"unknown label scheme '{name}'; known: {', '.join(sorted(schemes))}")
    return schemes[name]
