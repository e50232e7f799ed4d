"""The distribution over a scheme's grades at the label position of an answer (Post-CoT serving, CumPT).

Works on token strings with their top alternatives, whatever produced them (OpenAI/vLLM top logprobs,
or the top-k of a local model's logits), so multi-token grade ids ("L" + "3") are handled alike: the
label position is the first token after `Label:` at which the alternatives tell the grades apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from cotgen.backends.base import TokenAlternatives
from schemas.labels import LabelScheme

_MARKER = re.compile(r"label\s*[:=]", re.IGNORECASE)
_LOOKAHEAD = 6  # tokens after the marker to look for the one that decides the grade
_NOISE = " \t*`'\""


def label_distribution(positions: Sequence[TokenAlternatives] | None, scheme: LabelScheme) -> dict[str, float] | None:
    """P(grade) at the deciding token after the first `Label:`, normalised over the grades; None if absent."""
    if not positions:
        return None
    starts = []
    offset = 0
    for p in positions:
        starts.append(offset)
        offset += len(p.token)
    text = "".join(p.token for p in positions)
    m = _MARKER.search(text)
    if m is None:
        return None
    first = next((i for i, s in enumerate(starts) if s + len(positions[i].token) > m.end()), None)
    if first is None:
        return None
    spellings = {g.id: (g.id.lower(), g.name.lower()) for g in scheme.grades}
    for i in range(first, min(first + _LOOKAHEAD, len(positions))):
        prefix = text[: starts[i]]
        chosen = _grades_for(prefix + positions[i].token, m.end(), spellings)
        if chosen is None:
            continue  # whitespace or markup: the grade is not written yet
        if len(chosen) > 1:
            continue  # a shared prefix such as "L": the next token decides
        if not chosen:
            return None  # something other than a grade follows the marker
        return _distribution(positions[i], prefix, m.end(), spellings, scheme)
    return None


def _grades_for(text: str, marker_end: int, spellings: dict[str, tuple[str, ...]]) -> set[str] | None:
    """Grades the label text written so far could still become; None when nothing is written yet."""
    region = text[marker_end:].lstrip(_NOISE).lower()
    if not region:
        return None
    found = set()
    for grade, names in spellings.items():
        for name in names:
            if name.startswith(region) or (region.startswith(name) and not region[len(name):len(name) + 1].isalnum()):
                found.add(grade)
    return found


def _distribution(position: TokenAlternatives, prefix: str, marker_end: int,
                  spellings: dict[str, tuple[str, ...]], scheme: LabelScheme) -> dict[str, float] | None:
    mass = dict.fromkeys(scheme.ids, 0.0)
    for token, logprob in position.top:
        grades = _grades_for(prefix + token, marker_end, spellings)
        if grades and len(grades) == 1:
            mass[next(iter(grades))] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return {g: p / total for g, p in mass.items()}
