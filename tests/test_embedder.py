"""The embedding model follows the E5 recipe: EOS appended and pooled, padding-invariant, instructions on queries."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from synthembed.encoder import Embedder
from synthembed.params import ModelParams

TEXTS = [
    "hello world",
    "Vitamin D supplementation reduces the risk of respiratory infections in older adults.",
    "A short one.",
]


@pytest.fixture(scope="module")
def smollm2() -> Embedder:
    return Embedder.load("builtin:SmolLM2-135M-Instruct", ModelParams(dtype="fp32", max_seq_length=64))


def test_eos_is_appended_and_is_the_pooled_token(smollm2: Embedder) -> None:
    tokenizer = smollm2.tokenizer
    features = smollm2.model.preprocess(TEXTS)
    ids, mask = features["input_ids"], features["attention_mask"]
    # Left padding: the last position of every row is a real token, and it is EOS.
    assert tokenizer.padding_side == "left"
    assert mask[:, -1].all()
    assert (ids[:, -1] == tokenizer.eos_token_id).all()
    # Plain text, no chat template: "hello world" is exactly its two tokens plus EOS.
    assert features["input_ids"][0][mask[0].bool()].tolist() == [28120, 905, tokenizer.eos_token_id]


def test_eos_survives_truncation() -> None:
    embedder = Embedder.load("builtin:SmolLM2-135M-Instruct", ModelParams(dtype="fp32", max_seq_length=8))
    features = embedder.model.preprocess([" ".join(["word"] * 50)])
    assert features["input_ids"].shape[1] == 8
    assert features["input_ids"][0, -1] == embedder.tokenizer.eos_token_id


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_padding_does_not_change_embeddings(smollm2: Embedder, padding_side: str) -> None:
    smollm2.tokenizer.padding_side = padding_side
    try:
        alone = np.stack([smollm2.encode([text])[0] for text in TEXTS])
        batched = smollm2.encode(TEXTS, batch_size=len(TEXTS))
    finally:
        smollm2.tokenizer.padding_side = "left"
    cosine = (alone * batched).sum(axis=1)
    assert cosine.min() > 0.9999


def test_embeddings_are_unit_length(smollm2: Embedder) -> None:
    vectors = smollm2.encode(TEXTS)
    assert vectors.shape == (3, 576)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_instruction_only_on_queries(smollm2: Embedder) -> None:
    assert smollm2.convention.prefix("Retrieve abstracts") == "Instruct: Retrieve abstracts\nQuery: "
    assert smollm2.convention.prefix("") == "" and smollm2.convention.prefix("  ") == ""
    query_ids = smollm2.model.preprocess([smollm2.query_text("hello world", "Find papers")])["input_ids"][0].tolist()
    document_ids = smollm2.model.preprocess(["hello world"])["input_ids"][0].tolist()
    assert smollm2.tokenizer.decode(query_ids).startswith("Instruct: Find papers\nQuery: hello world")
    assert document_ids == [28120, 905, smollm2.tokenizer.eos_token_id]
    as_query = smollm2.encode_queries(["hello world"], instruction="Find papers")
    as_document = smollm2.encode_documents(["hello world"])
    assert float(as_query[0] @ as_document[0]) < 0.999
    np.testing.assert_array_equal(smollm2.encode(["hello world"], instruction="Find papers"), as_query)
    np.testing.assert_array_equal(smollm2.encode(["hello world"]), as_document)


def test_saved_model_loads_as_plain_sentence_transformer(smollm2: Embedder, tmp_path) -> None:
    smollm2.save(tmp_path / "embedder")
    plain = SentenceTransformer(str(tmp_path / "embedder"))
    ours = smollm2.encode(TEXTS)
    theirs = plain.encode(TEXTS, normalize_embeddings=True)
    assert ((ours * theirs).sum(axis=1)).min() > 0.9999
    reloaded = Embedder.load(str(tmp_path / "embedder"), ModelParams(dtype="fp32", max_seq_length=64))
    assert reloaded.model.preprocess(["hello world"])["input_ids"][0].tolist()[-1] == reloaded.tokenizer.eos_token_id


def test_encoder_backbone_uses_mean_pooling() -> None:
    minilm = Embedder.load("builtin:all-MiniLM-L6-v2", ModelParams(dtype="fp32"))
    assert minilm.model[1].pooling_mode == "mean"
    assert minilm.encode(["hello"]).shape == (1, 384)


def test_bf16_autocast_agrees_with_fp32_on_real_text() -> None:
    """The bf16 path (used where the hardware has bf16 units) must keep cosine >= 0.999 with fp32."""
    fp32 = Embedder.load("builtin:SmolLM2-135M-Instruct", ModelParams(dtype="fp32", max_seq_length=48))
    bf16 = Embedder(fp32.model, precision="bf16")
    cosine = (fp32.encode(TEXTS) * bf16.encode(TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.999
