"""Find the JSON answer in an LLM reply: bare JSON, a fenced code block, or an object inside prose."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def extract_json(text: str) -> Any | None:
    """The first JSON object or array in ``text`` (fenced blocks first), or None when there is none."""
    text = text.strip()
    candidates = [block.strip() for block in _FENCE.findall(text)] + [text]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
        value = _first_embedded(candidate)
        if value is not None:
            return value
    return None


def _first_embedded(text: str) -> Any | None:
    """Scan for ``{`` or ``[`` and decode from there; prefer objects, which every answer schema uses."""
    found_list = None
    for index, char in enumerate(text):
        if char not in "{[":
            continue
        try:
            value, _ = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
        if found_list is None and isinstance(value, list):
            found_list = value
    return found_list


_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def salvage_strings(text: str, after: str = "[") -> list[str]:
    """The complete string literals after ``after``: what survives of a list cut off by ``max_tokens``."""
    start = text.find(after)
    if start < 0:
        return []
    items = []
    for match in _STRING.finditer(text, start + len(after)):
        try:
            items.append(json.loads(match.group(0)))
        except json.JSONDecodeError:
            continue
    return items
