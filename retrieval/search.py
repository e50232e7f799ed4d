"""Find the rules and knowledge entries that apply to a text or to (query, item) pairs.

A pair becomes one query text through a template (config `index.query_template`), a Python format
string over these fields:

    {query}        the search query
    {title}        the item title
    {description}  the item description (often long; not in the default template)
    {attributes}   the item's attributes as "name: value; name: value"
    {source}       the pair's source name
    {scheme}       the pair's label scheme

The default, "query: {query} | item: {title} {attributes}", reads like the rules' own examples.
Filters: `kinds` (rule, knowledge), `tags` (a document matches if it has any of them) and `scheme`
(scheme-free documents always match; scheme-specific ones only under their schemes).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

from retrieval.index import RuleIndex
from schemas.errors import CotgenError
from schemas.pair import Pair
from schemas.rule import Rule

DEFAULT_TEMPLATE = "query: {query} | item: {title} {attributes}"
TEMPLATE_FIELDS = ("query", "title", "description", "attributes", "source", "scheme")
ALL_KINDS = ("rule", "knowledge")
Hits = list[tuple[Rule, float]]


def check_template(template: str) -> None:
    """Reject a template that names a field pairs do not have, or is not a valid format string."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise CotgenError(f"index.query_template: not a valid template ({e})") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise CotgenError(f"index.query_template: unknown field '{{{name}}}' (fields: "
                              f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})")


def compose_query(pair: Pair, template: str = DEFAULT_TEMPLATE) -> str:
    """The text a pair is searched with: the template filled in, whitespace collapsed."""
    attributes = "; ".join(f"{k}: {v}" for k, v in pair.attributes.items() if str(v).strip())
    text = template.format(query=pair.query, title=pair.title, description=pair.description,
                           attributes=attributes, source=pair.source, scheme=pair.scheme)
    return " ".join(text.split())


def allowed_rows(idx: RuleIndex, kinds: Sequence[str] = ALL_KINDS, scheme: str | None = None,
                 tags: Sequence[str] | None = None) -> np.ndarray | None:
    """Row ids passing the filters, or None when nothing is filtered out."""
    wanted_tags = set(tags or ())
    keep = [i for i, d in enumerate(idx.docs)
            if d.kind in kinds and (scheme is None or d.applies_to(scheme))
            and (not wanted_tags or wanted_tags & set(d.tags))]
    return None if len(keep) == len(idx.docs) else np.asarray(keep, dtype=np.int64)


def search_text(idx: RuleIndex, text: str, k: int = 5, kinds: Sequence[str] = ALL_KINDS,
                scheme: str | None = None, tags: Sequence[str] | None = None) -> Hits:
    """The k documents closest to `text`, best first, with cosine scores."""
    vectors = idx.embedder.encode([text])
    return idx.search_vectors(vectors, k, allowed_rows(idx, kinds, scheme, tags))[0]


def search_pairs(idx: RuleIndex, pairs: list[Pair], k: int = 5, template: str | None = None,
                 kinds: Sequence[str] = ALL_KINDS, scheme: str | None = None,
                 tags: Sequence[str] | None = None) -> list[Hits]:
    """The k documents for each pair, in pair order. `scheme=None` filters each pair by its own scheme."""
    template = template or DEFAULT_TEMPLATE
    check_template(template)
    if not pairs:
        return []
    vectors = idx.embedder.encode([compose_query(p, template) for p in pairs])
    results: list[Hits] = [[] for _ in pairs]
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(scheme or p.scheme, []).append(i)
    for group_scheme, rows in groups.items():
        hits = idx.search_vectors(vectors[rows], k, allowed_rows(idx, kinds, group_scheme, tags))
        for i, h in zip(rows, hits, strict=True):
            results[i] = h
    return results
