"""Embedder.encode batches texts by token length: sentence-transformers' embeddings, in the caller's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthembed.encoder import Embedder
from synthembed.params import ModelParams

# Character length and token length disagree here on purpose: the long digit run is many tokens.
TEXTS = [
    "a b c d e f g h i j k l m n o p",
    "1234567890 0987654321 1234567890",
    "Vitamin D supplementation reduces the risk of respiratory infections in older adults.",
    "hi",
    "the the the the the the the the the the the the the the the the the the the the the the the",
]


@pytest.fixture(scope="module")
def tiny(tiny_decoder_dir: Path) -> Embedder:
    return Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32", max_seq_length=16, batch_size=2))


def test_batches_are_ordered_by_tokens_after_truncation(tiny: Embedder) -> None:
    order = tiny._longest_first(TEXTS)
    counts = [len(tiny.tokenizer(TEXTS[i], truncation=True, max_length=16)["input_ids"]) for i in order]
    assert sorted(order) == list(range(len(TEXTS)))
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == 16  # the longest texts are cut at max_seq_length, so they tie at the limit


@pytest.mark.parametrize("instruction", [None, "Find papers"])
def test_matches_sentence_transformers_encode_in_input_order(tiny: Embedder, instruction: str | None) -> None:
    ours = tiny.encode(TEXTS, instruction=instruction, batch_size=2)
    prompt = tiny.convention.prefix(instruction) if instruction is not None else None
    theirs = tiny.model.encode(TEXTS, prompt=prompt, batch_size=2, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), tiny.dimension) and ours.dtype == np.float32
    np.testing.assert_allclose((ours * theirs).sum(axis=1), 1.0, atol=1e-5)
    # Each row belongs to its own text: distinct texts give clearly distinct vectors.
    assert (ours @ theirs.T - np.eye(len(TEXTS))).max() < 0.9999


def test_batch_size_does_not_change_embeddings(tiny: Embedder) -> None:
    one_by_one = tiny.encode(TEXTS, batch_size=1)
    all_at_once = tiny.encode(TEXTS, batch_size=len(TEXTS))
    assert (one_by_one * all_at_once).sum(axis=1).min() > 0.9999


def test_empty_input_gives_an_empty_matrix(tiny: Embedder) -> None:
    assert tiny.encode([]).shape == (0, tiny.dimension)
