"""Render chat messages from the versioned Jinja2 prompts; each prompt is identified by name and content hash."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import jinja2

from schemas.answer import STEP_TITLES, AnswerOrder
from schemas.errors import CotgenError, require_file
from schemas.labels import LabelScheme
from schemas.pair import Pair
from schemas.rule import Rule

Role = Literal["teacher", "policy"]
PROMPTS_PACKAGE = "cotgen.prompts"
DESCRIPTION_CHARS = 800
STEP_GUIDES = {
    "query_understanding": "what the shopper wants: product type, brand, attributes, intent.",
    "item_understanding": "what the item is: category, brand, attributes.",
    "category_matching": "whether the item's category serves the query's category.",
    "attribute_matching": "each attribute the query states, and whether the item has it.",
    "relevance_judgement": "apply the rules and the grade definitions and name the grade.",
}
_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.j2$")
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class Prompt:
    """One prompt template: `name` like "teacher.v1", `hash` the sha256 of its text (recorded per run)."""

    name: str
    text: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @cached_property
    def template(self) -> jinja2.Template:
        """Compiled once per prompt: compiling costs milliseconds, rendering microseconds."""
        return _ENV.from_string(self.text)

    def render(self, pair: Pair, scheme: LabelScheme, order: AnswerOrder, *, rules: list[Rule] | None = None,
               gold: str | None = None, structured: bool = False) -> list[dict[str, str]]:
        """System and user messages for one pair."""
        template = self.template
        context = template.new_context({
            "pair": pair, "scheme": scheme, "order": order, "rules": rules or [], "structured": structured,
            "gold": scheme.grade(gold) if gold else None, "description_chars": DESCRIPTION_CHARS,
            "steps": [(STEP_TITLES[n], STEP_GUIDES[n]) for n in STEP_GUIDES],
            "step_titles": [STEP_TITLES[n].lower() for n in STEP_GUIDES],
            "json_keys": json_keys(order),
        })
        return [{"role": role, "content": "".join(template.blocks[role](context)).strip()}
                for role in ("system", "user")]


def json_keys(order: AnswerOrder) -> list[str]:
    """The keys of a structured answer, in the order the model should write them."""
    steps = list(STEP_GUIDES)
    return ["label", *steps] if order == "label_first" else [*steps, "label"]


def shipped_prompts() -> dict[str, list[int]]:
    """Shipped prompt names and their versions, oldest first."""
    found: dict[str, list[int]] = {}
    for entry in resources.files(PROMPTS_PACKAGE).iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.setdefault(m.group("name"), []).append(int(m.group("version")))
    return {k: sorted(v) for k, v in found.items()}


def load_prompt(role: Role, ref: str = "latest") -> Prompt:
    """A shipped prompt ("latest" or "v2") or a template file of your own (a path to a .j2 file)."""
    if ref.endswith(".j2") or "/" in ref:
        path = Path(ref).expanduser()
        require_file(path, " (a prompt template)")
        prompt = Prompt(name=f"{role}:{path.name}", text=path.read_text(encoding="utf-8"))
    else:
        versions = shipped_prompts().get(role, [])
        version = versions[-1] if ref == "latest" and versions else int(ref.lstrip("v")) if ref.lstrip("v").isdigit() else None
        if version not in versions:
            raise CotgenError(f"no {role} prompt '{ref}' (shipped: {', '.join(f'v{v}' for v in versions) or 'none'})")
        name = f"{role}.v{version}"
        prompt = Prompt(name=name, text=resources.files(PROMPTS_PACKAGE).joinpath(f"{name}.j2").read_text(encoding="utf-8"))
    _check_blocks(prompt)
    return prompt


def _check_blocks(prompt: Prompt) -> None:
    try:
        blocks = prompt.template.blocks
    except jinja2.TemplateSyntaxError as e:
        raise CotgenError(f"prompt {prompt.name}:{e.lineno}: {e.message}") from None
    missing = [b for b in ("system", "user") if b not in blocks]
    if missing:
        raise CotgenError(f"prompt {prompt.name}: missing block(s) {', '.join(missing)}; a prompt has a system and a user block")
