"""The token ids really fed to decoder backbones: the tokenizer's own BOS (if any) + text + EOS, alone, in a
left-padded batch, after truncation and after a save and reload, for three tokenizer families."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

from synthembed.encoder import Embedder
from synthembed.params import ModelParams
from synthembed.train.export import check_pooled_token_is_eos

SHORT, LONG = "hello world", "a much longer text that goes on " * 20

# family -> (fixture, BOS the E5 input starts with, EOS it ends with)
FAMILIES = {
    "smollm2": ("tiny_decoder_dir", None, "<|im_end|>"),
    "mistral": ("mistral_decoder_dir", "<s>", "</s>"),
    "qwen": ("qwen_decoder_dir", None, "<|im_end|>"),
}


@pytest.fixture(params=list(FAMILIES), scope="module")
def family(request: pytest.FixtureRequest) -> tuple[Path, str | None, str]:
    fixture, bos, eos = FAMILIES[request.param]
    return request.getfixturevalue(fixture), bos, eos


def fed_ids(embedder: Embedder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids that reach the backbone's embedding layer during :meth:`Embedder.encode_documents`, and their
    mask."""
    seen: dict[str, torch.Tensor] = {}

    def ids_hook(module, args) -> None:
        seen["ids"] = args[0]

    def mask_hook(module, args) -> None:
        seen["mask"] = args[0]["attention_mask"]

    hooks = [
        embedder.model[0].auto_model.get_input_embeddings().register_forward_pre_hook(ids_hook),
        embedder.model[0].register_forward_pre_hook(mask_hook),
    ]
    try:
        embedder.encode_documents(texts, batch_size=len(texts))
    finally:
        for hook in hooks:
            hook.remove()
    return seen["ids"], seen["mask"]


def expected_ids(backbone: Path, text: str, bos: str | None, eos: str, limit: int) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    head = [tokenizer.convert_tokens_to_ids(bos)] if bos else []
    room = limit - len(head) - 1
    return head + tokenizer(text, add_special_tokens=False)["input_ids"][:room] + [tokenizer.convert_tokens_to_ids(eos)]


def test_alone_and_left_padded_batch_keep_bos_and_end_in_eos(family, tmp_path: Path) -> None:
    backbone, bos, eos = family
    params = ModelParams(backbone=str(backbone), pooling="lasttoken", max_seq_length=24, dtype="fp32")
    embedder = Embedder.load(str(backbone), params)
    short, long = (expected_ids(backbone, text, bos, eos, 24) for text in (SHORT, LONG))
    assert len(long) == 24  # cut at max_seq_length with BOS and EOS still in place

    ids, mask = fed_ids(embedder, [SHORT])
    assert ids.tolist() == [short] and mask.all()

    ids, mask = fed_ids(embedder, [SHORT, LONG])  # longest first, the short one padded on the left
    assert ids[0].tolist() == long
    padding = 24 - len(short)
    assert ids[1, padding:].tolist() == short and mask[1].tolist() == [0] * padding + [1] * len(short)
    check_pooled_token_is_eos(embedder.model)

    embedder.save(tmp_path / "embedder")  # a plain SentenceTransformer load feeds the same ids
    reloaded = SentenceTransformer(str(tmp_path / "embedder"))
    assert reloaded.preprocess([LONG, SHORT])["input_ids"].tolist() == ids.tolist()
    check_pooled_token_is_eos(reloaded)
    # encode_query's saved prompt goes after the tokenizer's own BOS, as the embedder's query text does
    as_query = reloaded.preprocess([SHORT], prompt=reloaded.prompts["query"])["input_ids"][0].tolist()
    assert as_query == embedder.model.preprocess([embedder.query_text(SHORT)])["input_ids"][0].tolist()
    assert as_query[-1] == short[-1] and len(as_query) > len(short)  # EOS last, the instruction in front
    assert bos is None or as_query[0] == short[0]  # and the BOS first
