"""The reference encoder that the pipeline's data checks read texts with (near-duplicate tasks in brainstorm;
hard-negative mining, the contamination audit and the record filters in prepare).

It is a fixed small model, not the one under training, so what a check decides does not move with the
experiment, and it runs in fp32 at 256 tokens, so it does not depend on the machine's bf16 units either.
"""

from __future__ import annotations

import numpy as np

from synthembed.encoder.embedder import Embedder
from synthembed.params import ModelParams

REFERENCE_ENCODER = "builtin:all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256


def load_reference(reference: str = REFERENCE_ENCODER) -> Embedder:
    return Embedder.load(reference, ModelParams(max_seq_length=MAX_SEQ_LENGTH, dtype="fp32"))


def near_duplicates(vectors: np.ndarray, similarity: float) -> list[int]:
    """Rows (of normalised ``vectors``) at least ``similarity`` close in cosine to an earlier kept row: the first
    of each group of near repeats is kept, so the result does not depend on anything but the order."""
    kept: list[np.ndarray] = []
    repeats = []
    for index, vector in enumerate(vectors):
        if kept and float(np.max(np.stack(kept) @ vector)) >= similarity:
            repeats.append(index)
        else:
            kept.append(vector)
    return repeats
