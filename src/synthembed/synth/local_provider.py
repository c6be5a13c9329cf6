"""``local/SmolLM2-135M-Instruct``: an in-process LiteLLM provider running a builtin model, for offline runs.

Concurrent requests are gathered into one batched ``generate`` call. The answer is steered to the kind's JSON:
when the request carries a JSON schema, the reply is forced to begin with ``{"<first key>": "``, which a
135M model would rarely find on its own. Precision is bf16 only where the hardware multiplies it natively.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import ModelResponse, Usage

PROVIDER = "local"
MAX_BATCH = 8
GATHER_S = 0.5  # how long the batcher waits for more requests to join a batch (they arrive staggered)


@dataclass
class _Job:
    messages: list[dict[str, str]]
    options: dict[str, Any]
    future: asyncio.Future = field(repr=False)


class LocalLLM(CustomLLM):
    """Serve ``local/<builtin name>`` with transformers, batching whatever requests are waiting."""

    def __init__(self) -> None:
        super().__init__()
        self._models: dict[str, tuple[Any, Any]] = {}
        self._load_lock = threading.Lock()
        self._queues: dict[tuple[int, str], asyncio.Queue] = {}

    def _model(self, name: str) -> tuple[Any, Any]:
        with self._load_lock:
            if name not in self._models:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                from synthembed.encoder.references import resolve_model

                path = resolve_model(f"builtin:{name}")
                tokenizer = AutoTokenizer.from_pretrained(path)
                tokenizer.padding_side = "left"
                model = AutoModelForCausalLM.from_pretrained(path).eval()
                self._models[name] = (model, tokenizer)
            return self._models[name]

    def completion(
        self, model: str, messages: list, model_response: ModelResponse, optional_params: dict, **kwargs: Any
    ) -> ModelResponse:
        text, usage = self._generate(model, [(messages, optional_params)])[0]
        return _fill(model_response, model, text, usage)

    async def acompletion(
        self, model: str, messages: list, model_response: ModelResponse, optional_params: dict, **kwargs: Any
    ) -> ModelResponse:
        loop = asyncio.get_running_loop()
        key = (id(loop), model)
        if key not in self._queues:
            self._queues[key] = asyncio.Queue()
            loop.create_task(self._batcher(model, self._queues[key]))
        job = _Job(messages, optional_params, loop.create_future())
        await self._queues[key].put(job)
        text, usage = await job.future
        return _fill(model_response, model, text, usage)

    async def _batcher(self, model: str, queue: asyncio.Queue) -> None:
        """Take the first waiting job, let others join for a moment, and run them as one batch."""
        while True:
            jobs = [await queue.get()]
            deadline = time.monotonic() + GATHER_S
            while len(jobs) < MAX_BATCH and (remaining := deadline - time.monotonic()) > 0:
                try:
                    jobs.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            try:
                results = await asyncio.to_thread(self._generate, model, [(j.messages, j.options) for j in jobs])
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(jobs, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    def _generate(self, model_name: str, batch: list[tuple[list, dict]]) -> list[tuple[str, Usage]]:
        import torch

        from synthembed.encoder.precision import autocast, resolve_precision

        model, tokenizer = self._model(model_name)
        options = batch[0][1]
        prefixes = [_json_prefix(opts) for _, opts in batch]
        prompts = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix
            for (messages, _), prefix in zip(batch, prefixes, strict=True)
        ]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        temperature = float(options.get("temperature", 1.0) or 0.0)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": float(options.get("top_p", 1.0))}
        if options.get("seed") is not None:
            torch.manual_seed(int(options["seed"]))
        with torch.inference_mode(), autocast(resolve_precision("auto")):
            output = model.generate(
                **inputs,
                max_new_tokens=int(options.get("max_tokens") or 256),
                pad_token_id=tokenizer.pad_token_id,
                stop_strings=["}"] if any(prefixes) else None,  # the answer object is flat: its first } ends it
                tokenizer=tokenizer,
                **(sampling if temperature > 0 else {"do_sample": False}),
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        results = []
        for row, prefix, mask in zip(new_tokens, prefixes, inputs["attention_mask"], strict=True):
            text = _conform(prefix + tokenizer.decode(row, skip_special_tokens=True), options)
            completion = int((row != tokenizer.pad_token_id).sum())
            results.append(
                (
                    text,
                    Usage(
                        prompt_tokens=int(mask.sum()),
                        completion_tokens=completion,
                        total_tokens=int(mask.sum()) + completion,
                    ),
                )
            )
        return results


def _json_prefix(options: dict[str, Any]) -> str:
    """The opening of the JSON answer the schema asks for, which the model then continues."""
    response_format = options.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    keys = list(schema.get("properties", {}))
    if not keys:
        return ""
    first = schema["properties"][keys[0]]
    opener = "[" if first.get("type") == "array" else ""
    return "{" + json.dumps(keys[0]) + ": " + opener + '"'


def _conform(text: str, options: dict[str, Any]) -> str:
    """Hold the reply to a flat string schema: once every key has a complete string value, return exactly
    those fields as JSON (dropping invented keys and a tail cut off by ``max_tokens``); else the raw text."""
    schema = ((options.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties", {})
    if not properties or any(spec.get("type") != "string" for spec in properties.values()):
        return text
    fields = {}
    for key in properties:
        match = re.search(json.dumps(key) + r'\s*:\s*("(?:[^"\\]|\\.)*")', text)
        if match is None:
            return text
        fields[key] = json.loads(match.group(1))
    return json.dumps(fields, ensure_ascii=False)


def _fill(response: ModelResponse, model: str, text: str, usage: Usage) -> ModelResponse:
    response.choices[0].message.content = text  # type: ignore[union-attr]
    response.choices[0].finish_reason = "stop"
    response.model = f"{PROVIDER}/{model}"
    response.usage = usage  # type: ignore[attr-defined]
    return response


_handler: LocalLLM | None = None


def register() -> None:
    """Make ``local/<name>`` models callable through LiteLLM (idempotent)."""
    global _handler
    if _handler is None:
        _handler = LocalLLM()
    entry = {"provider": PROVIDER, "custom_handler": _handler}
    if entry not in litellm.custom_provider_map:
        litellm.custom_provider_map.append(entry)
