"""Output budgets: the ``max_tokens`` of each request, sized from its kind and sampled template parameters.

One number for every request either cuts long answers (two 500-word documents are far more than 256 tokens)
or lets short ones run on. The size is the answer's words (what the prompt asks for) turned into tokens by
one rule, :func:`tokens`, plus the JSON around the values; an integer ``llm.max_tokens`` caps it.
"""

from __future__ import annotations

import math
import re
from typing import Any

TOKENS_PER_WORD = 1.4  # English prose in the BPE tokenizers of GPT-4, Llama 3 and Mistral (1.3-1.5)
NON_ENGLISH = 2.0  # most other languages and scripts take 1.5-3 times as many tokens per word
MARGIN = 1.3  # "at least N words" invites more than N
JSON_TOKENS = 16  # braces, and a fence or a line of prose around the object
VALUE_TOKENS = 8  # per value: the quoted key, colon, quotes, comma and a few escapes

SENTENCE_WORDS = 30  # a one-sentence text (a task, a short_short side); the least any free text gets
LABEL_WORDS = 10  # long_short labels: "a few words at most"
LONG_LONG_WORDS = 300  # prompts/generate/long_long.j2: both texts at least 300 words
UNIT_WORDS = {"phrase": 10, "sentence": SENTENCE_WORDS, "passage": 200}  # sts and bitext units


def tokens(words: int, english: bool = True) -> int:
    """The one words -> tokens rule: ``words`` x 1.4 tokens per word x the 1.3 margin (x 2 outside English)."""
    return math.ceil(words * TOKENS_PER_WORD * MARGIN * (1.0 if english else NON_ENGLISH))


def answer_tokens(kind: str, params: dict[str, Any], english: bool | None = None) -> int:
    """Tokens that a complete answer of ``kind`` (or grounded shape) needs, from the words its prompt asks for
    in each value; ``english`` defaults to whether every sampled language is English."""
    words = _value_words(kind, params)
    if english is None:
        english = all(params.get(key, "English") == "English" for key in ("language", "src_lang", "tgt_lang"))
    return tokens(sum(words), english) + JSON_TOKENS + VALUE_TOKENS * len(words)


def english_rate(text: str) -> bool:
    """Whether the English rate of :func:`tokens` fits answers in the language of ``text`` (a grounded
    document, whose language is not sampled): at most 5% of its non-space characters are outside ASCII, which
    passes English and most Latin-script text and sends other scripts to the non-English rate."""
    characters = "".join(text.split())
    return sum(not char.isascii() for char in characters) <= 0.05 * len(characters)


def task_list_tokens(count: int) -> int:
    """Tokens that a brainstorm answer of ``count`` one-sentence task definitions needs."""
    return tokens(count * SENTENCE_WORDS) + JSON_TOKENS + VALUE_TOKENS * count


def capped(size: int, cap: int | str) -> int:
    """The ``max_tokens`` to send: the size itself under ``llm.max_tokens: auto``, else at most the cap."""
    return size if cap == "auto" else min(size, int(cap))


def _value_words(kind: str, params: dict[str, Any]) -> list[int]:
    """The words each value of the answer is asked for, in the order of ``taxonomy.KEYS``."""
    if kind == "short_long":
        document = _length(params["num_words"])
        return [_length(params["query_length"]), document, document]
    if kind == "long_short":
        return [_length(params["num_words"]), LABEL_WORDS, LABEL_WORDS]
    if kind in ("short_short", "grounded_short_short"):
        return [SENTENCE_WORDS] * 2
    if kind == "grounded_short_long":  # the short side only: a one-sentence task and the query
        return [SENTENCE_WORDS, _length(params["query_length"])]
    if kind == "long_long":
        return [LONG_LONG_WORDS] * 2
    return [UNIT_WORDS[params["unit"]]] * 3  # sts, bitext: S1, S2, S3


def _length(value: int | str) -> int:
    """A length parameter (500, "at least 200", "5 to 15 words") as words: its largest number, and at least
    a sentence, since models overshoot a short length by more than the margin."""
    return max([SENTENCE_WORDS, *(int(number) for number in re.findall(r"\d+", str(value)))])
