"""Guided decoding on a tiny random decoder: the structure holds whatever the model writes, sampling is per
request, so an answer does not depend on the batch it was part of, and a value cut at its share of the
budget marks the reply truncated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthembed.synth import taxonomy
from synthembed.synth.guided_decoding import GuidedDecoder, plan_of


@pytest.fixture(scope="module")
def tokenizer(tiny_decoder_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.fixture(scope="module")
def decoder(tiny_decoder_dir: Path, tokenizer) -> GuidedDecoder:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir).eval()
    return GuidedDecoder(model, tokenizer, temperature=1.0, top_p=0.95)


class ScriptedDecoder(GuidedDecoder):
    """Writes a fixed continuation instead of sampling: a value that closes after two words for prompts
    starting with SHORT, fifty words without a closing quote otherwise."""

    def __init__(self, tokenizer) -> None:
        super().__init__(None, tokenizer, temperature=1.0, top_p=1.0)

    def continue_texts(self, texts, seeds, max_new_tokens, stop=None):
        scripts = ['two words", "next' if text.startswith("SHORT") else "word " * 50 for text in texts]
        return [self.tokenizer(script, add_special_tokens=False)["input_ids"][:max_new_tokens] for script in scripts]


def plan(kind: str):
    schema = taxonomy.BRAINSTORM_SCHEMA if kind == "tasks" else taxonomy.json_schema(kind)
    return plan_of({"response_format": taxonomy.response_format(kind, schema)})


def test_every_reply_is_the_schemas_json_within_the_budget(decoder: GuidedDecoder) -> None:
    kinds = ["short_long", "bitext", "short_short", "tasks"]
    prompts = [f"Write a {kind} example." for kind in kinds]
    replies = decoder.write(prompts, [plan(kind) for kind in kinds], seeds=[1, 2, 3, 4], budgets=[24] * 4)
    for kind, (text, tokens, truncated) in zip(kinds, replies, strict=True):
        data = json.loads(text)  # random weights write garbage values, never broken JSON
        if kind == "tasks":
            assert list(data) == ["tasks"] and isinstance(data["tasks"], list) and data["tasks"]
            assert all(isinstance(item, str) for item in data["tasks"])
        else:
            assert list(data) == list(taxonomy.KEYS[kind]) and all(isinstance(v, str) for v in data.values())
        assert 0 < tokens <= 24 and isinstance(truncated, bool)


def test_each_reply_keeps_its_own_budget(decoder: GuidedDecoder) -> None:
    kinds = ["short_short", "sts"]
    replies = decoder.write(["Write a pair.", "Write three."], [plan(k) for k in kinds], seeds=[1, 2], budgets=[8, 60])
    assert replies[0].tokens <= 8 < replies[1].tokens <= 60
    free = decoder.write_free(["Say something.", "Say more."], seeds=[3, 4], budgets=[5, 12])
    assert [reply.tokens for reply in free] == [5, 12] and all(reply.truncated for reply in free)


def test_a_value_cut_at_its_share_marks_the_reply_truncated(tokenizer) -> None:
    decoder = ScriptedDecoder(tokenizer)
    prompts = ["SHORT, room to close", "SHORT, no room for the quote", "LONG, never closes"]
    replies = decoder.write(prompts, [plan("short_short")] * 3, seeds=[1, 2, 3], budgets=[40, 2, 40])
    assert [reply.truncated for reply in replies] == [False, True, True]
    assert json.loads(replies[0].text) == {"input": "two words", "positive_document": "two words"}
    assert replies[1].tokens == 2 and replies[2].tokens == 40  # a cut value used all of its share of 20
    assert all(list(json.loads(reply.text)) == ["input", "positive_document"] for reply in replies)


def test_an_answer_does_not_depend_on_its_batch(decoder: GuidedDecoder) -> None:
    prompt = "Write a sentence about the sea."
    alone = decoder.write([prompt], [plan("short_short")], seeds=[7], budgets=[16])
    batched = decoder.write(
        ["A much longer prompt that pads the batch differently: " * 3, prompt],
        [plan("sts"), plan("short_short")],
        seeds=[99, 7],
        budgets=[16, 16],
    )
    assert batched[1] == alone[0]
    other_seed = decoder.write([prompt], [plan("short_short")], seeds=[8], budgets=[16])
    assert other_seed[0] != alone[0]
