"""Guided JSON decoding for a small local model: the decoder writes the structure, the model writes the values.

A 135M model rarely produces a schema's JSON on its own. For an object schema whose fields are strings or
lists of strings (every generate kind and the brainstorm task list), the reply is built field by field:

- a string field: the decoder writes ``{"key": "`` (later ``, "key": "``) and the model writes the value up
  to its closing quote;
- a list field: items are written the same way, and after each one the model chooses between ``,`` and
  ``]`` (whichever it finds more likely), so it decides how many items to give, up to ``MAX_ITEMS``.

Each field gets an equal share of the request's ``max_tokens``, so a reply always closes with every key
present; only its content can be poor. A value that fills its share without its closing quote was cut there:
the reply says so (``truncated``), and the provider reports it as ``finish_reason: length``, the way a hosted
model reports an answer that ran into ``max_tokens``. Sampling is per request: every row draws from its own
generator, seeded from the request's seed and the round, so an answer does not depend on which other requests
shared its batch (up to the last bits of the logits, which a different batch shape can change).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList

MAX_ITEMS = 32
ITEM_TOKENS = 64  # one list item (a task sentence) is short

Plan = list[tuple[str, bool]]  # (key, is_list) for each field, in schema order


class Written(NamedTuple):
    """One reply: its JSON, the tokens the model wrote, and whether a value was cut at its share."""

    text: str
    tokens: int
    truncated: bool


def plan_of(options: dict[str, Any]) -> Plan | None:
    """The fields of the request's ``response_format`` schema, or None when it is not strings and string lists."""
    schema = ((options.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    plan = []
    for key, spec in (schema.get("properties") or {}).items():
        is_list = spec.get("type") == "array" and (spec.get("items") or {}).get("type") == "string"
        if spec.get("type") != "string" and not is_list:
            return None
        plan.append((key, is_list))
    return plan or None


class RowSampler(LogitsProcessor):
    """Samples every row with its own generator and leaves only that token possible (generate runs greedy)."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            outside = ordered.cumsum(dim=-1) - ordered > self.top_p  # keep the smallest set reaching top_p
            probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        picks = [torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators, strict=True)]
        only = torch.full_like(scores, float("-inf"))
        return only.scatter(-1, torch.stack(picks), 0.0)


class GuidedDecoder:
    """Batched, seeded continuation of chat prompts, guided to a JSON object when the request has a plan."""

    _list_marks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __init__(self, model: Any, tokenizer: Any, temperature: float, top_p: float) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_p = temperature, top_p

    def continue_texts(
        self, texts: list[str], seeds: list[int], max_new_tokens: int, stop: str | None = None
    ) -> list[list[int]]:
        """The new token ids of each text (pads dropped), each ending at ``stop`` or ``max_new_tokens``."""
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        sampler = [RowSampler(seeds, self.temperature, self.top_p)] if self.temperature > 0 else []
        output = self.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList(sampler),
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=[stop] if stop else None,
            tokenizer=self.tokenizer,
        )
        new = output[:, inputs["input_ids"].shape[1] :].tolist()
        return [[t for t in row if t != self.tokenizer.pad_token_id] for row in new]

    def write_free(self, prompts: list[str], seeds: list[int], budgets: list[int]) -> list[Written]:
        """Each prompt continued freely within its budget (a request without a schema of strings)."""
        replies = []
        for ids, budget in zip(self.continue_texts(prompts, seeds, max(budgets)), budgets, strict=True):
            kept = ids[:budget]
            replies.append(
                Written(self.tokenizer.decode(kept, skip_special_tokens=True), len(kept), len(ids) >= budget)
            )
        return replies

    def write(self, prompts: list[str], plans: list[Plan], seeds: list[int], budgets: list[int]) -> list[Written]:
        """Each prompt's JSON reply, field by field, within its own token budget."""
        rows = [
            _Reply(p, plan, seed, max(budget // len(plan), 1))
            for p, plan, seed, budget in zip(prompts, plans, seeds, budgets, strict=True)
        ]
        for round_ in itertools.count():  # each round writes one value (or list item) of every unfinished reply
            active = [row for row in rows if not row.done]
            if not active:
                break
            caps = [row.open_value() for row in active]
            seeds_now = [row.seed * 1_000_003 + round_ for row in active]
            new = self.continue_texts([row.text for row in active], seeds_now, max(caps), '"')
            for row, ids, cap in zip(active, new, caps, strict=True):
                kept = ids[:cap]
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
                body = _string_body(text)
                row.close_value(body, len(kept), cut=len(kept) == cap and not text[len(body) :].startswith('"'))
            asked = [row for row in active if row.in_list and not row.list_is_full()]
            closes = self._closes_list([row.text for row in asked])
            going_on = {id(row) for row, close in zip(asked, closes, strict=True) if not close}
            for row in active:
                if id(row) not in going_on:
                    row.next_field()
        return [Written(json.dumps(row.values, ensure_ascii=False), row.used, row.truncated) for row in rows]

    def _closes_list(self, texts: list[str]) -> list[bool]:
        """For texts that end a list item, whether the model would rather write ``]`` than ``,`` next."""
        if not texts:
            return []
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(**inputs, position_ids=positions).logits[:, -1, :].float()
        probs = torch.softmax(logits, dim=-1)
        close, more = self._marks()
        return (probs[:, close].sum(-1) > probs[:, more].sum(-1)).tolist()

    def _marks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids that begin with ``]`` and with ``,`` (after optional spaces), once per tokenizer."""
        name = self.tokenizer.name_or_path
        if name not in self._list_marks:
            pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            stripped = [piece.lstrip() for piece in pieces]
            close = [i for i, piece in enumerate(stripped) if piece.startswith("]")]
            more = [i for i, piece in enumerate(stripped) if piece.startswith(",")]
            self._list_marks[name] = (torch.tensor(close), torch.tensor(more))
        return self._list_marks[name]


@dataclass
class _Reply:
    """One reply being written: the prompt and JSON so far, the values, and the field being written."""

    text: str
    plan: Plan
    seed: int
    share: int  # tokens per field
    values: dict[str, Any] = field(default_factory=dict)
    field: int = 0
    field_used: int = 0
    used: int = 0
    truncated: bool = False  # a value filled its share without closing

    @property
    def done(self) -> bool:
        return self.field >= len(self.plan)

    @property
    def key(self) -> str:
        return self.plan[self.field][0]

    @property
    def in_list(self) -> bool:
        return self.plan[self.field][1]

    def open_value(self) -> int:
        """Write the JSON up to the next value's opening quote; return how many tokens the value may take."""
        if self.in_list and self.key in self.values:
            self.text += ', "'
        else:
            opener = ': ["' if self.in_list else ': "'
            self.text += ("{" if self.field == 0 else ", ") + json.dumps(self.key) + opener
            self.values[self.key] = [] if self.in_list else ""
        return max(min(self.share - self.field_used, ITEM_TOKENS), 1) if self.in_list else self.share

    def close_value(self, raw: str, tokens: int, cut: bool) -> None:
        self.text += raw + '"'
        self.truncated |= cut
        self.used += tokens
        self.field_used += tokens
        if self.in_list:
            self.values[self.key].append(_unescape(raw))
        else:
            self.values[self.key] = _unescape(raw)

    def list_is_full(self) -> bool:
        return self.field_used >= self.share or len(self.values[self.key]) >= MAX_ITEMS

    def next_field(self) -> None:
        self.text += "]" if self.in_list else ""
        self.field += 1
        self.field_used = 0


def _string_body(text: str) -> str:
    """The text up to the first unescaped quote: the JSON string the model meant to write."""
    return re.match(r'(?:[^"\\]|\\.)*', text).group(0)  # a dangling final backslash is left out too


def _unescape(raw: str) -> str:
    """A JSON string body as text (``\\n`` -> newline); taken literally when the model's escapes are broken."""
    try:
        return json.loads(f'"{raw}"')
    except json.JSONDecodeError:
        return raw
