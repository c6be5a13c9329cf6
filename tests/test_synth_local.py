"""The offline in-process provider: the builtin SmolLM2 answers through LiteLLM with the kind's JSON, each
request within its own ``max_tokens``, and an answer cut there finishes with ``length``."""

from __future__ import annotations

import asyncio
import json

import litellm
import pytest

from synthembed.synth import local_provider, prompts
from synthembed.synth.guided_decoding import GuidedDecoder
from synthembed.synth.local_provider import register
from synthembed.synth.taxonomy import KEYS, json_schema, response_format, validate


def test_each_request_keeps_its_budget_and_a_cut_answer_finishes_with_length(tiny_decoder_dir, monkeypatch):
    from transformers import AutoTokenizer

    def scripted(self, texts, seeds, max_new_tokens, stop=None):  # a value that closes, or fifty words
        scripts = ['two words", "' if "SHORT" in text else "word " * 50 for text in texts]
        return [self.tokenizer(script, add_special_tokens=False)["input_ids"][:max_new_tokens] for script in scripts]

    register()
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    tokenizer.padding_side = "left"
    monkeypatch.setattr(GuidedDecoder, "continue_texts", scripted)
    monkeypatch.setitem(local_provider._handler._models, "scripted", (None, tokenizer))
    asks = [("SHORT", 60), ("SHORT", 2), ("LONG", 60)]

    async def ask() -> list:
        return await asyncio.gather(
            *(
                litellm.acompletion(
                    model="local/scripted",
                    messages=prompts.messages(f"{length} answer, please."),
                    max_tokens=budget,
                    seed=index,
                    response_format=response_format("short_short", json_schema("short_short")),
                )
                for index, (length, budget) in enumerate(asks)
            )
        )

    replies = asyncio.run(ask())  # one batch: the budgets differ within it
    assert [reply.choices[0].finish_reason for reply in replies] == ["stop", "length", "length"]
    assert all(reply.usage.completion_tokens <= budget for reply, (_, budget) in zip(replies, asks, strict=True))
    assert replies[1].usage.completion_tokens == 2 and replies[2].usage.completion_tokens == 60
    assert json.loads(replies[0].choices[0].message.content) == {"input": "two words", "positive_document": "two words"}


@pytest.mark.slow  # short generations of the real 135M model on CPU
def test_local_model_answers_every_key_of_each_kind_in_one_batch(smollm2_dir):
    register()
    asks = {
        "short_short": prompts.render(
            "generate", "short_short", task="Given a country, find its capital city.", language="English"
        ),
        "bitext": prompts.render(
            "generate",
            "bitext",
            unit="sentence",
            src_lang="English",
            tgt_lang="German",
            high_score="5",
            low_score="2",
            difficulty="high school",
        ),
        "short_long": prompts.render(
            "generate",
            "short_long",
            task="Given a health question, find web pages that answer it.",
            query_type="a question",
            query_length="less than 5 words",
            clarity="clear",
            num_words="50",
            language="English",
            difficulty="college",
        ),
    }

    async def ask() -> list:
        return await asyncio.gather(
            *(
                litellm.acompletion(
                    model="local/SmolLM2-135M-Instruct",
                    messages=prompts.messages(prompt),
                    max_tokens=48,
                    temperature=0.7,
                    seed=1,
                    drop_params=True,
                    response_format=response_format(kind, json_schema(kind)),
                )
                for kind, prompt in asks.items()
            )
        )

    replies = asyncio.run(ask())
    for kind, reply in zip(asks, replies, strict=True):
        data = json.loads(reply.choices[0].message.content)  # always a JSON object: the keys are written for it
        assert list(data) == list(KEYS[kind])
        assert 0 < reply.usage.completion_tokens <= 48 and reply.usage.prompt_tokens > 50
        assert reply.choices[0].finish_reason in {"stop", "length"}  # length: a value was cut at its 16 tokens
        # Whether the content is good enough is validate()'s call: a 135M model may leave a value empty or
        # repeat one, but never breaks the structure.
        assert validate(kind, data)[1] in {None, "repeated_value", "empty_value"}, data
