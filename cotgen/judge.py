"""The generative step judge: render the judge prompt for one CoT, ask for a JSON verdict per step, parse it.

TaoSR-SHE grades reasoning steps with "a high-quality generative stepwise reward model" mixed with human
step marks; its exact formulas are not public. This module is OURS:

- **Input.** The versioned template `judge.vK.j2` (name and sha256 recorded per judge run) shows the pair,
  the rules retrieved for it, the grade meanings, the gold label (`show_gold`), the CoT's own final label
  and its steps, numbered as the answer format writes them.
- **Output.** One JSON object, flat so every backend can decode it (a local model through the field
  decoder, servers through their JSON-schema mode): for each step `<key>_reason` (one line) then `<key>`
  (`correct` | `incorrect`), where `<key>` is the step's name (`query_understanding`, ...; a repeated name
  gets `_2`, `_3`). Reason first, so the verdict follows from it.
- **First wrong step** = the first step judged incorrect (derived from the verdicts, never asked
  separately, so it cannot contradict them). None when every judged step is correct.
- **Parse status** per judgement: `ok` (every step has a verdict), `partial` (some do), `failed` (text but
  no verdict), `empty` (no text). Parsing is tolerant: the schema's flat object, an object per step,
  a `steps` list, or free-text lines `3. incorrect: reason` / `Category matching - wrong, ...`.
- **Hybrid step label** (curation, SQL view `hybrid_step_labels`): a human step mark wins; else a human
  accept/edit of the whole sample vouches for its unmarked steps; else the latest judge run's verdict;
  else the step has no label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cotgen.backends.base import Message
from cotgen.prompting import DESCRIPTION_CHARS, Prompt, load_prompt
from schemas.answer import STEP_TITLES, json_object
from schemas.labels import LabelScheme
from schemas.pair import Pair
from schemas.rule import Rule
from schemas.sample import Step

JudgeStatus = Literal["ok", "partial", "failed", "empty"]
JUDGE_PROMPT = "judge"
VERDICTS = ("correct", "incorrect")
REASON_SUFFIX = "_reason"


@dataclass(frozen=True)
class StepVerdict:
    """The judge's word on one step: `correct` None when it gave no verdict for it."""

    index: int  # 0-based position among the sample's steps (as reviews' step_index)
    name: str
    correct: bool | None
    reason: str = ""


@dataclass
class Judgement:
    """Verdicts for every step of one CoT (in order), with a parse status and what the parser noticed."""

    steps: list[StepVerdict]
    status: JudgeStatus
    note: str = ""

    @property
    def first_wrong(self) -> int | None:
        """0-based index of the first step judged incorrect; None when none was."""
        return next((v.index for v in self.steps if v.correct is False), None)

    @property
    def verdicts(self) -> list[bool | None]:
        return [v.correct for v in self.steps]


@dataclass(frozen=True)
class JudgedStep:
    """A step as the template shows it."""

    position: int
    title: str
    text: str
    key: str


def load_judge_prompt(ref: str = "latest") -> Prompt:
    """A shipped judge template ("latest", "v1") or a .j2 file of your own with system and user blocks."""
    return load_prompt(JUDGE_PROMPT, ref)  # type: ignore[arg-type]  # prompting's Role names generation roles


def step_keys(names: Sequence[str]) -> list[str]:
    """The JSON key of each step: its name, `name_2`, `name_3` for repeats (so keys stay unique)."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        base = re.sub(r"\W+", "_", name.strip().lower()).strip("_") or "step"
        seen[base] = seen.get(base, 0) + 1
        keys.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return keys


def verdict_schema(names: Sequence[str]) -> dict[str, Any]:
    """The flat JSON schema of a judgement: per step a reason string, then the verdict enum."""
    props: dict[str, Any] = {}
    for key in step_keys(names):
        props[key + REASON_SUFFIX] = {"type": "string"}
        props[key] = {"type": "string", "enum": list(VERDICTS)}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def render_messages(prompt: Prompt, pair: Pair, scheme: LabelScheme, steps: Sequence[Step], *,
                    rules: Sequence[Rule] = (), gold: str | None = None, predicted: str | None = None,
                    structured: bool = True) -> list[Message]:
    """System and user messages asking the judge to grade `steps` of one CoT about `pair`.

    `gold` is the gold grade id to show (None hides it); `predicted` the CoT's own final label.
    """
    keys = step_keys([s.name for s in steps])
    shown = [JudgedStep(position=i, title=STEP_TITLES.get(s.name, s.name.replace("_", " ").capitalize()),
                        text=" ".join(s.text.split()), key=k) for i, (s, k) in enumerate(zip(steps, keys, strict=True), 1)]
    template = prompt.template
    context = template.new_context({
        "pair": pair, "scheme": scheme, "rules": list(rules), "steps": shown, "structured": structured,
        "gold": scheme.grade(gold) if gold else None, "predicted": predicted, "description_chars": DESCRIPTION_CHARS,
        "keys": [k + suffix for k in keys for suffix in (REASON_SUFFIX, "")],
    })
    return [{"role": role, "content": "".join(template.blocks[role](context)).strip()} for role in ("system", "user")]


# ---------------------------------------------------------------------------- parsing
# Words a verdict field may hold whole; inside prose (a text line, a sentence) only the unambiguous ones count,
# so "no brand stated, correct" is not read as "no".
_POSITIVE = {"correct", "right", "true", "valid", "accurate", "yes", "ok", "pass", "sound", "good"}
_NEGATIVE = {"incorrect", "wrong", "false", "invalid", "inaccurate", "flawed", "mistaken", "erroneous", "no", "error",
             "fail", "failed", "bad"}
_IN_PROSE = ("incorrect", "inaccurate", "erroneous", "mistaken", "correct", "accurate", "invalid", "valid", "flawed",
             "wrong", "right", "false", "true")
_VERDICT_WORD = re.compile(r"\b(not\s+)?(" + "|".join(_IN_PROSE) + r")\b", re.IGNORECASE)
_VERDICT_FIELDS = ("verdict", "correct", "is_correct", "label", "judgement", "judgment", "grade", "result", "status")
_REASON_FIELDS = ("reason", "explanation", "why", "rationale", "comment")
_LINE_NUMBER = re.compile(r"^\W*(?:step\s*)?(?P<num>\d{1,2})\b\s*[.):\-–—]?\s*(?P<rest>.*)$", re.IGNORECASE)


def _norm(key: object) -> str:
    return re.sub(r"\W+", "_", str(key).strip().lower()).strip("_")


def _verdict(value: object) -> bool | None:
    """True / False from a verdict value (`"correct"`, `"Incorrect - ..."`, `true`, `1`, `"not correct"`)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, dict):
        return next((v for v in (_verdict(value[k]) for k in value if _norm(k) in _VERDICT_FIELDS) if v is not None), None)
    if not isinstance(value, str):
        return None
    whole = value.strip().strip(".!\"'").lower()
    if whole in _POSITIVE or whole in _NEGATIVE:
        return whole in _POSITIVE
    return _in_prose(value)[0]


def _in_prose(text: str) -> tuple[bool | None, int]:
    """The first unambiguous verdict word in `text` ("not correct" is incorrect) and where it ends."""
    m = _VERDICT_WORD.search(text)
    if not m:
        return None, 0
    return (m.group(2).lower() in _POSITIVE) != bool(m.group(1)), m.end()


def _reason_of(value: object) -> str:
    if isinstance(value, dict):
        return next((str(value[k]) for k in value if _norm(k) in _REASON_FIELDS), "")
    return ""


def _aliases(index: int, name: str, key: str) -> list[str]:
    """Keys a judge may use for step `index`: its key, name, title, number."""
    n = index + 1
    return [key, _norm(name), _norm(STEP_TITLES.get(name, name)), str(n), f"step_{n}", f"step{n}"]


def _from_json(data: dict, names: Sequence[str]) -> list[tuple[bool | None, str]]:
    flat = {_norm(k): v for k, v in data.items()}
    listed = next((v for k, v in flat.items() if k in ("steps", "verdicts", "judgements", "judgments") and isinstance(v, list)), None)
    if isinstance(listed, list):
        flat.update({str(i + 1): entry for i, entry in enumerate(listed)})
    nested = next((v for k, v in flat.items() if k in ("steps", "verdicts") and isinstance(v, dict)), None)
    if isinstance(nested, dict):
        flat.update({_norm(k): v for k, v in nested.items()})
    out = []
    for i, (name, key) in enumerate(zip(names, step_keys(names), strict=True)):
        aliases = _aliases(i, name, key)
        value = next((flat[a] for a in aliases if a in flat), None)
        reason = next((str(flat[a + REASON_SUFFIX]) for a in aliases if a + REASON_SUFFIX in flat), "")
        out.append((_verdict(value), (reason or _reason_of(value)).strip()))
    return out


def _step_of_line(line: str, names: Sequence[str]) -> tuple[int, str] | None:
    """(step index, rest of the line) when a line starts with a step number or a step's title/name."""
    plain = line.replace("*", "").replace("#", "").strip()
    m = _LINE_NUMBER.match(plain)
    if m and 1 <= int(m.group("num")) <= len(names):
        return int(m.group("num")) - 1, m.group("rest")
    lowered = plain.lower()
    for i, name in enumerate(names):
        for alias in (STEP_TITLES.get(name, "").lower(), name.lower(), name.replace("_", " ").lower()):
            if alias and lowered.startswith(alias):
                return i, plain[len(alias):]
    return None


def _from_lines(text: str, names: Sequence[str]) -> list[tuple[bool | None, str]]:
    found: dict[int, tuple[bool | None, str]] = {}
    for line in text.splitlines():
        hit = _step_of_line(line, names)
        if hit is None or hit[0] in found:
            continue
        index, rest = hit
        verdict, end = _in_prose(rest)
        if verdict is not None:
            found[index] = (verdict, rest[end:].strip(" :-–—,.;").strip())
    return [found.get(i, (None, "")) for i in range(len(names))]


def parse_verdicts(text: str, names: Sequence[str]) -> Judgement:
    """Per-step verdicts from a judge's answer for a CoT whose steps are `names`; never raises."""
    if not text or not text.strip():
        return Judgement([StepVerdict(i, n, None) for i, n in enumerate(names)], "empty", "empty output")
    notes: list[str] = []
    data = json_object(text)
    found = _from_json(data, names) if data is not None else []
    if not any(v is not None for v, _ in found):
        lines = _from_lines(text, names)
        if any(v is not None for v, _ in lines):
            found = lines
            notes.append("verdicts read from text lines" if data is None else "JSON held no verdicts; read text lines")
    if not found:
        found = [(None, "")] * len(names)
    steps = [StepVerdict(i, n, v, r) for i, (n, (v, r)) in enumerate(zip(names, found, strict=True))]
    missing = [s.name for s in steps if s.correct is None]
    status: JudgeStatus = "ok" if not missing else "failed" if len(missing) == len(steps) else "partial"
    if missing and status == "partial":
        notes.append("no verdict for " + ", ".join(missing))
    if status == "failed":
        notes.append("no verdict found")
    return Judgement(steps, status, "; ".join(notes))

