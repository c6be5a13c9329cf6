"""Secret values (API keys, tokens, passwords) live in the environment only; nothing we print or log holds them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def secret_values() -> list[str]:
    """Values of environment variables whose names look secret (API keys, tokens, passwords)."""
    return [value for name, value in os.environ.items() if SECRET_NAME.search(name) and len(value) >= 8]


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value (by default: those in the environment now) replaced by ``***``."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, "***")
    return text
