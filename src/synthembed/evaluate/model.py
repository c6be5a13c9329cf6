"""Our :class:`~synthembed.encoder.Embedder` as an MTEB encoder, with E5-style task instructions.

Which models get instructions: decoder backbones (the model type is a causal LM and not a masked LM, e.g.
Llama/SmolLM2, whether freshly wrapped or saved after training) are instruction-following embedders in the
E5-mistral recipe, so their queries get ``Instruct: {task}\\nQuery: ``; encoder backbones such as
all-MiniLM-L6-v2 were trained without instructions and get none (otherwise their published scores would not
reproduce). ``evaluate.instructions`` can force either way. The task text is MTEB's own (the task metadata's
prompt, else the task type's default), which is what MTEB uses for the e5-instruct models. Documents (the
corpus side of retrieval) never get an instruction; symmetric tasks (STS, classification) instruct every text,
as E5-mistral does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from synthembed.encoder import Embedder

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from torch.utils.data import DataLoader

InstructionMode = Literal["auto", "always", "never"]


def is_instruction_model(embedder: Embedder) -> bool:
    """True for decoder backbones (causal LMs that are not also masked LMs, which rules out BERT)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(embedder.model[0].auto_model.config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


class EmbedderEncoder(AbsEncoder):
    """Feeds MTEB's batches to :meth:`Embedder.encode`, passing the task instruction for queries only."""

    def __init__(self, embedder: Embedder, name: str, instructions: InstructionMode = "auto") -> None:
        self.model = embedder
        self.use_instructions = instructions == "always" or (instructions == "auto" and is_instruction_model(embedder))
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

    def instruction_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str | None:
        """The task text for this side of the task, or None (documents, or a model without instructions)."""
        if not self.use_instructions or prompt_type == PromptType.document:
            return None
        return self.get_instruction(task_metadata, prompt_type) or None

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
        return self.model.encode(texts, instruction=self.instruction_for(task_metadata, prompt_type))
