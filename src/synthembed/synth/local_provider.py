"""``local/SmolLM2-135M-Instruct``: an in-process LiteLLM provider running a builtin model, for offline runs.

Concurrent requests are gathered into one batched ``generate`` call. Requests with a JSON schema of strings
and string lists (every step of this package) are answered through
:mod:`~synthembed.synth.guided_decoding`, which writes the JSON structure and lets the model write the values;
other requests continue the prompt freely. Each request keeps its own ``max_tokens``; an answer cut there
finishes with ``length``, any other with ``stop``. Precision is bf16 only where the hardware multiplies it natively.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import litellm
from litellm import CustomLLM
from litellm.types.utils import ModelResponse, Usage

if TYPE_CHECKING:
    from synthembed.synth.guided_decoding import Written

PROVIDER = "local"
MAX_BATCH = 8
DEFAULT_MAX_TOKENS = 256  # for a direct call without max_tokens; the stages always send one
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
        return _fill(model_response, model, *self._generate(model, [(messages, optional_params)])[0])

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
        return _fill(model_response, model, *await job.future)

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

    def _generate(self, model_name: str, batch: list[tuple[list, dict]]) -> list[tuple[Written, int]]:
        """Each request's reply and its prompt's length in tokens."""
        import torch

        from synthembed.encoder.precision import autocast, resolve_precision
        from synthembed.synth.guided_decoding import GuidedDecoder, plan_of

        model, tokenizer = self._model(model_name)
        options = batch[0][1]  # one sampling setting per batch: the requests of one run share it
        decoder = GuidedDecoder(
            model, tokenizer, float(options.get("temperature", 1.0) or 0.0), float(options.get("top_p", 1.0))
        )
        prompts = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) for messages, _ in batch
        ]
        seeds = [int(opts.get("seed") or 0) for _, opts in batch]
        budgets = [int(opts.get("max_tokens") or DEFAULT_MAX_TOKENS) for _, opts in batch]
        plans = [plan_of(opts) for _, opts in batch]
        with torch.inference_mode(), autocast(resolve_precision("auto")):
            if all(plans):
                replies = decoder.write(prompts, plans, seeds, budgets)
            else:
                replies = decoder.write_free(prompts, seeds, budgets)
        prompt_tokens = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        return list(zip(replies, prompt_tokens, strict=True))


def _fill(response: ModelResponse, model: str, reply: Written, prompt_tokens: int) -> ModelResponse:
    response.choices[0].message.content = reply.text  # type: ignore[union-attr]
    response.choices[0].finish_reason = "length" if reply.truncated else "stop"
    response.model = f"{PROVIDER}/{model}"
    usage = Usage(
        prompt_tokens=prompt_tokens, completion_tokens=reply.tokens, total_tokens=prompt_tokens + reply.tokens
    )
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
