"""The reference encoder that prepare's checks read texts with (hard-negative mining, the contamination audit,
the synthetic-record filters): fp32 and 256 tokens, so what they decide does not depend on the machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthembed.encoder import Embedder
from synthembed.evaluate.cache import EmbeddingCache
from synthembed.params import ModelParams

MAX_SEQ_LENGTH = 256


def load_reference(reference: str) -> Embedder:
    return Embedder.load(reference, ModelParams(max_seq_length=MAX_SEQ_LENGTH, dtype="fp32"))


def encode_texts(texts: list[str], reference: str, cache_dir: Path | None = None) -> np.ndarray:
    """Normalised vectors of ``texts`` read as documents (no prompt), through the cache in ``cache_dir``."""
    embedder = load_reference(reference)
    if cache_dir is None:
        return embedder.encode_documents(texts)
    cache = EmbeddingCache.for_model(cache_dir, embedder.fingerprint(), embedder.precision)
    return cache.encode(texts, "", embedder.encode_documents)
