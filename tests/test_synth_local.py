"""The offline in-process provider: the builtin SmolLM2 answers through LiteLLM with the kind's JSON."""

from __future__ import annotations

import asyncio

import litellm
import pytest

from synthembed.synth import prompts
from synthembed.synth.local_provider import register
from synthembed.synth.parsing import extract_json
from synthembed.synth.taxonomy import json_schema, response_format, validate


@pytest.mark.slow  # two short generations of the real 135M model on CPU
def test_local_model_answers_parseable_json_in_one_batch(smollm2_dir):
    register()
    prompt = prompts.render(
        "generate", "short_short", task="Given a country, find its capital city.", language="English"
    )

    async def ask() -> list:
        return await asyncio.gather(
            *(
                litellm.acompletion(
                    model="local/SmolLM2-135M-Instruct",
                    messages=prompts.messages(prompt),
                    max_tokens=48,
                    temperature=0,
                    seed=seed,
                    drop_params=True,
                    response_format=response_format("short_short", json_schema("short_short")),
                )
                for seed in (1, 2)
            )
        )

    replies = asyncio.run(ask())
    texts = [reply.choices[0].message.content for reply in replies]
    assert all(text.startswith('{"input": "') for text in texts)  # the forced JSON opening
    assert all(reply.usage.completion_tokens > 0 for reply in replies)
    # Parseable JSON with exactly the kind's keys; whether the content is good enough is validate()'s call
    # (greedy 135M output often repeats the input as the positive, which validate rejects as repeated_value).
    parsed = [extract_json(text) for text in texts]
    assert any(isinstance(v, dict) and list(v) == ["input", "positive_document"] for v in parsed), texts
    verdicts = [validate("short_short", v)[1] for v in parsed if isinstance(v, dict)]
    assert set(verdicts) <= {None, "repeated_value"}
