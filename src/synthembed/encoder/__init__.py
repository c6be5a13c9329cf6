"""Building, running and saving the embedding model."""

from synthembed.encoder.embedder import Embedder, query_prompt

__all__ = ["Embedder", "query_prompt"]
