"""Our :class:`~synthembed.encoder.Embedder` as an MTEB encoder, with E5-style task instructions.

Which models get instructions is the embedder's own query convention (``evaluate.instructions: auto``): a
decoder backbone (Llama/SmolLM2, freshly wrapped or saved after training) is an instruction-following embedder in
the E5-mistral recipe, so its queries get ``Instruct: {task}\\nQuery: ``; an encoder backbone such as
all-MiniLM-L6-v2 was trained without instructions and gets none (otherwise its published scores would not
reproduce). ``always`` / ``never`` override the convention for this evaluation only. The task text is pinned per
task in :mod:`synthembed.evaluate.instructions` (the E5 authors' published list). Documents (the corpus side of
retrieval and reranking) never get an instruction; symmetric tasks (STS, classification, clustering, pair
classification, summarization) instruct every text, as the E5 evaluation does. With an
:class:`~synthembed.evaluate.cache.EmbeddingCache`, a text this model has read before with the same prompt is not
encoded again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from synthembed.encoder import Embedder
from synthembed.evaluate.cache import EmbeddingCache
from synthembed.evaluate.instructions import task_instruction

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from torch.utils.data import DataLoader

InstructionMode = Literal["auto", "always", "never"]


class EmbedderEncoder(AbsEncoder):
    """Feeds MTEB's batches to the embedder: queries with the task instruction, documents as plain text."""

    def __init__(
        self,
        embedder: Embedder,
        name: str,
        instructions: InstructionMode = "auto",
        cache: EmbeddingCache | None = None,
    ) -> None:
        if instructions != "auto":
            embedder = embedder.with_convention(
                replace(embedder.convention, takes_instructions=instructions == "always")
            )
        self.embedder = embedder
        self.cache = cache
        self.use_instructions = embedder.convention.takes_instructions
        self.mteb_model_meta = ModelMeta.create_empty(
            overwrites={
                "name": name,
                "revision": "local",
                "loader": None,
                "similarity_fn_name": ScoringFunction.COSINE,
                "use_instructions": self.use_instructions,
                "embed_dim": embedder.dimension,
                "max_tokens": embedder.model.max_seq_length,
                "framework": ["Sentence Transformers", "PyTorch"],
                "modalities": ["text"],
            }
        )

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.document:
            prompt, encode = "", self.embedder.encode_documents
        else:
            # "" (a task without an instruction) means no instruction at all, not the model's default one.
            task = task_instruction(task_metadata) if self.use_instructions else ""
            prompt = self.embedder.convention.prefix(task)

            def encode(batch: list[str]) -> np.ndarray:
                return self.embedder.encode_queries(batch, instruction=task)

        return encode(texts) if self.cache is None else self.cache.encode(texts, prompt, encode)
