"""JSON-schema decoding for a local model: we write the keys, the model writes the values.

`structured = true` on a server asks for a flat JSON object (five string steps and an enum label).
A local transformers model has no grammar engine, so this writes the object field by field: the key
is forced, a string value is sampled until its closing quote (or the field's token budget), an enum
value is sampled among the allowed values only (`prefix_allowed_tokens_fn`). The KV cache carries
over from field to field; tokens a row must not see (its closing quote, padding, another row's
longer value) are masked rather than removed, so every row keeps its own positions.

Small models (SmolLM2-135M) rarely write the free-text format unaided; this is how they still
produce parsable, labelled answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cotgen.backends.hf_compat import cache_kwargs, cache_of

MIN_FIELD_TOKENS = 16


@dataclass
class Decoded:
    """One row's object, the tokens the model wrote for it, and whether a value hit its budget."""

    values: dict[str, str] = field(default_factory=dict)
    tokens_out: int = 0
    truncated: bool = False

    def text(self) -> str:
        return json.dumps(self.values, ensure_ascii=False)


def _last_sentence(text: str) -> str:
    """A value cut by its token budget ends at its last full sentence, when it has one."""
    end = max(text.rfind(mark) for mark in (". ", "! ", "? "))
    return text[: end + 1] if end > 0 else text


class _Trie:
    """Token sequences of the allowed enum values, walked as the model writes one."""

    def __init__(self, sequences: list[list[int]], end: int):
        self.children: dict[int, _Trie] = {}
        self.end = end
        self.terminal = False
        for seq in sequences:
            node = self
            for token in seq:
                node = node.children.setdefault(token, _Trie([], end))
            node.terminal = True

    def allowed(self, written: list[int]) -> list[int]:
        node = self
        for token in written:
            if token not in node.children:
                return [self.end]  # the value is complete (the model chose the end token)
            node = node.children[token]
        return [*node.children, *([self.end] if node.terminal else [])]


class FieldDecoder:
    """Writes `schema`'s properties in order for a batch of prompts (see the module docstring)."""

    def __init__(self, lm: Any, tokenizer: Any, torch: Any, sampling: dict[str, Any]):
        self.lm = lm
        self.tokenizer = tokenizer
        self.torch = torch
        self.sampling = sampling
        self.eos = {tokenizer.eos_token_id, tokenizer.pad_token_id}

    def decode(self, schema: dict[str, Any], input_ids: Any, attention_mask: Any, cache: Any,
               max_tokens: int) -> list[Decoded]:
        props = list(schema["properties"].items())
        strings = sum(1 for _, spec in props if "enum" not in spec)
        budget = max(MIN_FIELD_TOKENS, max_tokens // max(strings, 1))
        rows = [Decoded() for _ in range(input_ids.shape[0])]
        seq, mask = input_ids, attention_mask
        for i, (key, spec) in enumerate(props):
            head = ("{" if i == 0 else '", ') + json.dumps(key) + ': "'
            seq, mask = self._append(seq, mask, self._ids(head))
            start = seq.shape[1]
            if "enum" in spec:
                out = self._choose(seq, mask, cache, spec["enum"])
            else:
                out = self._generate(seq, mask, cache, budget, stop_strings=['"'], tokenizer=self.tokenizer)
            generated = out.sequences[:, start:]
            keep = []
            for row, tokens in zip(rows, generated.tolist(), strict=True):
                value, kept, cut = self._value(tokens)
                row.values[key] = value.strip()
                row.tokens_out += kept
                row.truncated |= cut and "enum" not in spec
                keep.append([1] * kept + [0] * (len(tokens) - kept))
            seq = out.sequences
            mask = self.torch.cat([mask, self.torch.tensor(keep, dtype=mask.dtype, device=mask.device)], dim=1)
            cache = cache_of(out)
        return rows

    def _choose(self, seq: Any, mask: Any, cache: Any, values: list[str]) -> Any:
        """Sample one of `values`: at each token only continuations of an allowed value are possible."""
        sequences = [self._ids(v) for v in values]
        trie = _Trie(sequences, self.tokenizer.eos_token_id)
        start = seq.shape[1]
        return self._generate(seq, mask, cache, max(map(len, sequences)) + 1,
                              prefix_allowed_tokens_fn=lambda _, ids: trie.allowed(ids[start:].tolist()))

    def _value(self, tokens: list[int]) -> tuple[str, int, bool]:
        """(text up to the closing quote, tokens kept in context, whether the budget ran out first)."""
        for j, token in enumerate(tokens):
            if token in self.eos:
                return self.tokenizer.decode(tokens[:j]), j, False
            text = self.tokenizer.decode(tokens[: j + 1])
            if '"' in text:
                return text[: text.index('"')].rstrip("\\"), j, False
        return _last_sentence(self.tokenizer.decode(tokens)), len(tokens), True

    def _generate(self, seq: Any, mask: Any, cache: Any, max_new_tokens: int, **kwargs: Any) -> Any:
        with self.torch.inference_mode():
            return self.lm.generate(input_ids=seq, attention_mask=mask, **cache_kwargs(cache),
                                    max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                    return_dict_in_generate=True, **self.sampling, **kwargs)

    def _append(self, seq: Any, mask: Any, tail: list[int]) -> tuple[Any, Any]:
        """Every row gets the same forced tokens (a key) after what it has so far."""
        torch = self.torch
        ids = torch.tensor([tail], dtype=seq.dtype, device=seq.device).expand(seq.shape[0], -1)
        return torch.cat([seq, ids], dim=1), torch.cat([mask, torch.ones_like(ids, dtype=mask.dtype)], dim=1)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]
