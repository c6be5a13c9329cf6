"""Guided decoding on a tiny random decoder: the structure holds whatever the model writes, and sampling is
per request, so an answer does not depend on the batch it was part of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthembed.synth import taxonomy
from synthembed.synth.guided_decoding import GuidedDecoder, plan_of


@pytest.fixture(scope="module")
def decoder(tiny_decoder_dir: Path) -> GuidedDecoder:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir).eval()
    return GuidedDecoder(model, tokenizer, temperature=1.0, top_p=0.95)


def plan(kind: str):
    schema = taxonomy.BRAINSTORM_SCHEMA if kind == "tasks" else taxonomy.json_schema(kind)
    return plan_of({"response_format": taxonomy.response_format(kind, schema)})


def test_every_reply_is_the_schemas_json_within_the_budget(decoder: GuidedDecoder) -> None:
    kinds = ["short_long", "bitext", "short_short", "tasks"]
    prompts = [f"Write a {kind} example." for kind in kinds]
    replies = decoder.write(prompts, [plan(kind) for kind in kinds], seeds=[1, 2, 3, 4], budget=24)
    for kind, (text, tokens) in zip(kinds, replies, strict=True):
        data = json.loads(text)  # random weights write garbage values, never broken JSON
        if kind == "tasks":
            assert list(data) == ["tasks"] and isinstance(data["tasks"], list) and data["tasks"]
            assert all(isinstance(item, str) for item in data["tasks"])
        else:
            assert list(data) == list(taxonomy.KEYS[kind]) and all(isinstance(v, str) for v in data.values())
        assert 0 < tokens <= 24


def test_an_answer_does_not_depend_on_its_batch(decoder: GuidedDecoder) -> None:
    prompt = "Write a sentence about the sea."
    alone = decoder.write([prompt], [plan("short_short")], seeds=[7], budget=16)
    batched = decoder.write(
        ["A much longer prompt that pads the batch differently: " * 3, prompt],
        [plan("sts"), plan("short_short")],
        seeds=[99, 7],
        budget=16,
    )
    assert batched[1] == alone[0]
    other_seed = decoder.write([prompt], [plan("short_short")], seeds=[8], budget=16)
    assert other_seed[0] != alone[0]
