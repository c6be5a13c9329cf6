"""The offline in-process provider: the builtin SmolLM2 answers through LiteLLM with the kind's JSON."""

from __future__ import annotations

import asyncio
import json

import litellm
import pytest

from synthembed.synth import prompts
from synthembed.synth.local_provider import register
from synthembed.synth.taxonomy import KEYS, json_schema, response_format, validate


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
        # Whether the content is good enough is validate()'s call: a 135M model may leave a value empty or
        # repeat one, but never breaks the structure.
        assert validate(kind, data)[1] in {None, "repeated_value", "empty_value"}, data
