"""Embeddings kept on disk per model, content-addressed, so no text is encoded twice for one model.

The evaluation suite re-reads the same texts run after run (a classification task's train texts, every corpus of
every baseline), and encoding is nearly all of its time. A vector is filed under

- the model's fingerprint (:meth:`Embedder.fingerprint`: weights, pooling, tokenizer, lengths) and the precision
  it was encoded in: one folder each;
- the exact prompt the model read before the text (the query template around the task instruction, or nothing
  for a document) and the text itself: one key each.

So a changed instruction, a retrained adapter or another precision never reads a stale vector, and one text read
the same way by two tasks is encoded once. MTEB's own ``CachedEmbeddingWrapper`` keys by task name instead of
by prompt (a changed instruction would reuse old vectors) and rewrites one index file in place; here every
encode call adds a shard (``NAME.npy`` + ``NAME.keys``, named by the digest of its keys) written atomically, so
a killed run loses at most the shard it was writing, and two runs sharing the folder never overwrite each
other's shards with different content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from synthembed.io import atomic_write


class EmbeddingCache:
    """The vectors one model (in one precision) has already produced, read from and appended to ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.encoded = 0  # texts this process had to encode
        self.reused = 0  # texts answered from the cache
        self._rows: dict[str, np.ndarray] = {}
        for keys_file in sorted(directory.glob("*.keys")):
            vectors_file = keys_file.with_suffix(".npy")
            if not vectors_file.is_file():
                continue  # a shard whose vectors never landed (killed between the two renames)
            keys = keys_file.read_text(encoding="utf-8").split()
            vectors = np.load(vectors_file)
            if len(keys) == len(vectors):
                self._rows.update(zip(keys, vectors, strict=True))

    @classmethod
    def for_model(cls, root: Path, fingerprint: str, precision: str) -> EmbeddingCache:
        return cls(root / f"{fingerprint}-{precision}")

    def __len__(self) -> int:
        return len(self._rows)

    def encode(self, texts: list[str], prompt: str, encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """The vectors of ``texts`` read after ``prompt``: cached ones as they are, the rest from ``encode`` (which
        embeds a list of texts with that same prompt), stored before they are returned."""
        if not texts:
            return encode([])
        keys = [_key(prompt, text) for text in texts]
        missing = list(dict.fromkeys(key for key in keys if key not in self._rows))  # each distinct text once
        self.encoded += len(missing)
        self.reused += len(keys) - len(missing)
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            vectors = np.asarray(encode([text_of[key] for key in missing]), dtype=np.float32)
            self._append(missing, vectors)
            self._rows.update(zip(missing, vectors, strict=True))
        return np.stack([self._rows[key] for key in keys])

    def _append(self, keys: list[str], vectors: np.ndarray) -> None:
        """One new shard: the vectors first, then the keys that make them visible to the next reader."""
        stem = self.directory / hashlib.sha256("".join(keys).encode()).hexdigest()[:24]
        with atomic_write(stem.with_suffix(".npy"), "wb") as handle:
            np.save(handle, vectors)
        with atomic_write(stem.with_suffix(".keys")) as handle:
            handle.write("\n".join(keys) + "\n")


def _key(prompt: str, text: str) -> str:
    return hashlib.sha256(f"{prompt}\x00{text}".encode()).hexdigest()
