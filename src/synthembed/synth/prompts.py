"""Render the step templates in ``prompts/`` with Jinja2 in strict mode (a missing variable is an error).

The templates are the repository's top-level ``prompts/`` (what DVC tracks), linked into the package as
``synthembed/prompts`` so that an installed wheel carries them too.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

PROMPTS_DIR = Path(str(resources.files("synthembed") / "prompts"))


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(step: str, kind: str, **variables: Any) -> str:
    """The prompt for ``step`` ("brainstorm" or "generate") and ``kind``, filled with ``variables``."""
    return _environment().get_template(f"{step}/{kind}.j2").render(**variables).strip()


def messages(prompt: str) -> list[dict[str, str]]:
    """One user turn: the templates carry every instruction, so no system prompt is needed."""
    return [{"role": "user", "content": prompt}]
