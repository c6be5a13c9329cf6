"""The one rule for text that users hand to the embedder, applied alike by ``embed``, ``search`` and the server.

A text must hold something besides white space, and must be valid Unicode: a lone UTF-16 surrogate (what
JavaScript leaves when it cuts a string through an emoji, or what Python makes of non-UTF-8 bytes on the
command line) cannot be tokenized, so it is refused with the position of the text rather than crashing later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from synthembed.errors import UserError

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_texts(texts: Sequence[str], name: str = "input") -> None:
    """Raise :class:`UserError` naming the first text (``name[i]``) that is empty or not valid Unicode."""
    for index, text in enumerate(texts):
        if not text.strip():
            raise UserError(f"{name}[{index}] is empty: every text needs some content")
        if match := LONE_SURROGATE.search(text):
            raise UserError(
                f"{name}[{index}] is not valid Unicode: a lone surrogate {match.group()!a} at character "
                f"{match.start()} (a string cut through an emoji, or bytes that are not UTF-8)"
            )
