"""Texts read by the reference encoder (``encoder.reference_encoder``) through the evaluation's embedding
cache, so that prepare's checks encode only the texts they have not seen before."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthembed.encoder.reference_encoder import load_reference
from synthembed.evaluate.cache import EmbeddingCache


def encode_texts(texts: list[str], reference: str, cache_dir: Path | None = None) -> np.ndarray:
    """Normalised vectors of ``texts`` read as documents (no prompt), through the cache in ``cache_dir``."""
    embedder = load_reference(reference)
    if cache_dir is None:
        return embedder.encode_documents(texts)
    cache = EmbeddingCache.for_model(cache_dir, embedder.fingerprint(), embedder.precision)
    return cache.encode(texts, "", embedder.encode_documents)
