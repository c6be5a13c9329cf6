"""Building, running and saving the embedding model."""

from synthembed.encoder.convention import QueryConvention, is_decoder
from synthembed.encoder.embedder import Embedder

__all__ = ["Embedder", "QueryConvention", "is_decoder"]
