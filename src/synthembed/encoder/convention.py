"""How a model writes its queries: decided once per model, saved with it, read back when it is loaded.

In the E5-mistral recipe a decoder backbone embeds a query as ``Instruct: {task}\\nQuery: {text}`` and a
document as plain text. An encoder backbone such as all-MiniLM-L6-v2 was trained without instructions, so its
queries are plain text as well (an instruction would lower its published scores). The choice is made when an
embedder is built over a backbone (:func:`is_decoder`) and travels with the model in two places that every save
keeps, whether ``SentenceTransformer.save``, the trainer's export or an MLflow-logged copy wrote the folder:

- sentence-transformers' own ``prompts`` in ``config_sentence_transformers.json``: ``query`` is the template
  filled with the default instruction, ``document`` is empty. Plain ``SentenceTransformer(path).encode_query``
  therefore embeds a query as :meth:`~synthembed.encoder.Embedder.encode_queries` does by default;
- the convention itself (whether the model takes instructions, the template, the default instruction) under
  ``synthembed_query_convention`` in the transformer's ``config.json``, a key transformers keeps on load, so
  that any other instruction is written into the same template after a reload.

A folder without that key (all-MiniLM-L6-v2, an embedder saved by an older version) falls back to
:func:`is_decoder`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthembed.errors import UserError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

CONFIG_KEY = "synthembed_query_convention"
INSTRUCTION_TEMPLATE = "Instruct: {task}\nQuery: "
DEFAULT_INSTRUCTION = "Given a query, retrieve relevant passages that answer the query"


def is_decoder(model_dir: Path) -> bool:
    """True when the checkpoint in ``model_dir`` (a plain backbone or a saved embedder) is a decoder LM."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return is_decoder_type(config.get("model_type"))


def is_decoder_type(model_type: str | None) -> bool:
    """A causal LM type that is not also a masked LM type (BERT has a causal LM head too, but is an encoder).

    The rule reads the model type rather than the architecture, because the config of a saved embedder names
    the bare transformer (``LlamaModel``), not the ``LlamaForCausalLM`` checkpoint it was built from.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


@dataclass(frozen=True)
class QueryConvention:
    """Whether queries carry a task instruction, and the template that puts it in front of the query text."""

    takes_instructions: bool
    template: str = INSTRUCTION_TEMPLATE
    default_instruction: str = DEFAULT_INSTRUCTION

    def __post_init__(self) -> None:
        if not isinstance(self.takes_instructions, bool) or not isinstance(self.default_instruction, str):
            raise UserError(f"malformed {CONFIG_KEY}: takes_instructions must be a boolean, default_instruction text")
        try:
            filled = self.template.format(task="\0")
        except (AttributeError, IndexError, KeyError, ValueError):
            filled = ""
        if filled.count("\0") != 1:
            raise UserError(f"malformed {CONFIG_KEY}: the template {self.template!r} must hold {{task}} exactly once")

    def prefix(self, instruction: str | None = None) -> str:
        """What goes in front of a query's text: the template around ``instruction`` (the default instruction
        when None); nothing for a model that takes no instructions, or for a blank instruction."""
        task = self.default_instruction if instruction is None else instruction
        if not self.takes_instructions or not task.strip():
            return ""
        return self.template.format(task=task.strip())

    def query_text(self, text: str, instruction: str | None = None) -> str:
        """``text`` written as a query for ``instruction``: what the model reads, e.g. a training anchor."""
        return self.prefix(instruction) + text

    def prompts(self) -> dict[str, str]:
        """sentence-transformers' prompts for this convention (``encode_query`` / ``encode_document``)."""
        return {"query": self.prefix(), "document": ""}

    @classmethod
    def of(cls, model: SentenceTransformer) -> QueryConvention:
        """The convention ``model`` carries, else the one its transformer's type implies."""
        config = model[0].config
        saved = getattr(config, CONFIG_KEY, None)
        if saved is None:
            return cls(takes_instructions=is_decoder_type(getattr(config, "model_type", None)))
        return cls.from_dict(saved)

    @classmethod
    def from_dict(cls, saved: Any) -> QueryConvention:
        fields = ("takes_instructions", "template", "default_instruction")
        if not isinstance(saved, dict) or sorted(saved) != sorted(fields):
            raise UserError(f"malformed {CONFIG_KEY} in the model's config.json: expected the keys {', '.join(fields)}")
        return cls(**saved)

    def attach(self, model: SentenceTransformer) -> None:
        """Make ``model`` carry this convention, in memory and in every folder it is saved to."""
        setattr(model[0].config, CONFIG_KEY, asdict(self))
        model.prompts.update(self.prompts())
