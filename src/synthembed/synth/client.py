"""Every LLM call of the pipeline: LiteLLM Router (fallbacks, retries with backoff), a concurrency bound,
the disk cache and journal, cost accounting, the budget stop, and a live progress bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import openai
from tqdm import tqdm

from synthembed.errors import UserError, first_line
from synthembed.params import LLMParams
from synthembed.secrets import redact

PRIMARY = "primary"
# What a local OpenAI-compatible server (vLLM, Ollama, llama.cpp) gets when the environment holds no key:
# LiteLLM's OpenAI client refuses to send a request without one, and such servers accept any.
PLACEHOLDER_KEY = "no-key-set"


@dataclass(frozen=True)
class Request:
    """One prompt to send; ``schema`` asks for structured output where the provider supports it."""

    messages: list[dict[str, str]]
    schema_name: str
    schema: dict[str, Any]
    max_tokens: int  # sized per request (``synth.budget``)
    seed: int | None = None  # a sampling seed per request: repeated prompts still get distinct answers
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reply:
    request: Request
    content: str | None = None
    model: str | None = None
    source: str = "llm"  # llm | cache | journal
    error: str | None = None
    finish_reason: str | None = None  # as LiteLLM reports it: stop, length, ...

    @property
    def truncated(self) -> bool:
        """The answer stopped at ``max_tokens``: the local decoder cut a value, or a provider said so."""
        return self.finish_reason == "length"


# What ``on_reply`` returns: None for an accepted answer, else the rejection reason.
Outcome = str | None


@dataclass
class Stats:
    requests: int = 0  # calls that reached a provider
    cache_hits: int = 0
    journal_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_replies: int = 0
    failed: Counter = field(default_factory=Counter)
    skipped_for_budget: int = 0
    budget_exhausted: bool = False

    def since(self, earlier: Stats) -> Stats:
        """What was counted after ``earlier`` (a copy taken then): counts subtracted, the budget flag as now."""
        names = [f.name for f in fields(self) if f.name != "budget_exhausted"]
        counts = {name: getattr(self, name) - getattr(earlier, name) for name in names}
        return Stats(**counts, budget_exhausted=self.budget_exhausted)


def is_local(model: str) -> bool:
    """Whether ``model`` is served in-process by the offline provider (``local/<builtin name>``)."""
    return model.startswith("local/")


class LLMClient:
    """Send requests concurrently through a LiteLLM Router, answering from journal or cache where possible."""

    def __init__(self, settings: LLMParams, journal_name: str):
        from litellm import Router

        from synthembed.synth.cache import Journal

        self.settings = settings
        if any(is_local(model) for model in (settings.model, *settings.fallbacks)):
            from synthembed.synth.local_provider import register

            register()
        for model in (settings.model, *settings.fallbacks):
            _check_provider(model)
        if not settings.api_base:
            for model in (settings.model, *settings.fallbacks):
                if missing := _missing_key_variables(model):
                    raise UserError(
                        f"llm.model {model} needs an API key: set {' or '.join(missing)} in the environment"
                    )
        self.journal = Journal(Path(settings.cache_dir) / f"{journal_name}.journal.jsonl")
        models = [settings.model, *settings.fallbacks]
        names = [PRIMARY] + [f"fallback-{i}" for i in range(len(settings.fallbacks))]
        self.router = Router(
            model_list=[
                {"model_name": name, "litellm_params": self._deployment(model)}
                for name, model in zip(names, models, strict=True)
            ],
            fallbacks=[{PRIMARY: names[1:]}] if settings.fallbacks else [],
            num_retries=settings.max_retries,
            timeout=settings.timeout_s,
            retry_after=0,
            disable_cooldowns=True,
        )
        self.stats = Stats()
        self._answered = False  # one answer proves the configuration; later connection errors are transient

    def _deployment(self, model: str) -> dict[str, Any]:
        deployment: dict[str, Any] = {"model": model, "timeout": self.settings.timeout_s, "max_retries": 0}
        if self.settings.api_base:
            deployment["api_base"] = self.settings.api_base
            if _missing_key_variables(model):
                deployment["api_key"] = PLACEHOLDER_KEY
        return deployment

    def sampling(self, request: Request) -> dict[str, Any]:
        return {
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
            "max_tokens": request.max_tokens,
        }

    def request_key(self, request: Request) -> str:
        """Identity of a request: every model, the messages, the sampling and the answer schema."""
        material = {
            "models": [self.settings.model, *self.settings.fallbacks],
            "api_base": self.settings.api_base,
            "messages": request.messages,
            "schema": request.schema,
            "seed": request.seed,
            **self.sampling(request),
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def run(self, requests: Iterable[Request], on_reply: Callable[[Reply], Outcome], desc: str) -> Stats:
        """Answer every request (or stop at the budget); ``on_reply`` parses each answer as it arrives.

        A client may run several batches (generate's examples, then its grounded requests): the counts and the
        budget run on across them, and each run reopens the journal that the previous one closed."""
        requests = list(requests)
        if self.journal.closed:
            self.journal = type(self.journal)(self.journal.path)
        try:
            with litellm_settings(Path(self.settings.cache_dir) / "responses"):
                asyncio.run(self._run_all(requests, on_reply, desc))
        finally:
            self.journal.close()
        return self.stats

    async def _run_all(self, requests: list[Request], on_reply: Callable[[Reply], Outcome], desc: str) -> None:
        semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        rejected = Counter()
        bar = tqdm(total=len(requests), desc=desc, unit="req", dynamic_ncols=True, mininterval=0.5)

        async def one(request: Request) -> None:
            async with semaphore:
                reply = await self._answer(request)
            if reply is None:
                bar.update(1)
                return
            outcome = on_reply(reply)
            if outcome is not None:
                rejected[outcome] += 1
            bar.update(1)
            bar.set_postfix(
                cached=self.stats.cache_hits + self.stats.journal_hits,
                rejected=sum(rejected.values()),
                cost=f"${self.stats.cost_usd:.4f}",
                refresh=False,
            )

        try:
            await asyncio.gather(*(one(request) for request in requests))
        finally:
            bar.close()

    async def _answer(self, request: Request) -> Reply | None:
        key = self.request_key(request)
        entry = self.journal.get(key)
        if entry is not None:
            self.stats.journal_hits += 1
            finish = entry.get("finish_reason")
            return Reply(
                request, content=entry["content"], model=entry["model"], source="journal", finish_reason=finish
            )
        if self._over_budget():
            self.stats.skipped_for_budget += 1
            return None
        return await self._call(request, key)

    def _over_budget(self) -> bool:
        if self.stats.cost_usd > 0 and self.stats.cost_usd >= self.settings.budget_usd:
            self.stats.budget_exhausted = True
        return self.stats.budget_exhausted

    async def _call(self, request: Request, key: str) -> Reply:
        import litellm

        from synthembed.synth.taxonomy import response_format

        try:
            response = await self.router.acompletion(
                model=PRIMARY,
                messages=request.messages,
                response_format=response_format(request.schema_name, request.schema),
                caching=True,
                seed=request.seed,
                **self.sampling(request),
            )
        except litellm.AuthenticationError as exc:
            raise UserError(self._refused_key(exc)) from None
        except (litellm.PermissionDeniedError, litellm.NotFoundError) as exc:
            raise UserError(
                f"the LLM provider refused the request ({type(exc).__name__}): {_first_line(exc)}"
            ) from None
        except openai.APIError as exc:  # the base of every LiteLLM API error; the retries are spent by now
            if _is_connection_error(exc) and not self._answered:
                where = self.settings.api_base or f"the provider of {self.settings.model}"
                raise UserError(
                    f"nothing answers at {where} (connection failed after {self.settings.max_retries} retries): "
                    "start the server or correct llm.api_base"
                ) from None
            self.stats.requests += 1
            reason = _failure_reason(exc)
            self.stats.failed[reason] += 1
            return Reply(request, error=reason)
        self._answered = True
        hidden = getattr(response, "_hidden_params", {}) or {}
        content = response.choices[0].message.content or ""
        finish = response.choices[0].finish_reason
        model = response.model or self.settings.model
        if hidden.get("cache_hit"):
            self.stats.cache_hits += 1
            cost = 0.0
        else:
            self.stats.requests += 1
            usage = getattr(response, "usage", None)
            self.stats.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            self.stats.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            cost = _cost(response, hidden)
            if cost is None:
                self.stats.unpriced_replies += 1
                cost = 0.0
            self.stats.cost_usd += cost
        entry = {"key": key, "model": model, "content": content, "finish_reason": finish, "cost_usd": cost}
        self.journal.append({**entry, "at": time.time()})
        source = "cache" if hidden.get("cache_hit") else "llm"
        return Reply(request, content=content, model=model, source=source, finish_reason=finish)

    def _refused_key(self, exc: Exception) -> str:
        """A 401 as one line that names the variable to set."""
        variable = _key_variable(self.settings.model)
        where = f"the LLM server at {self.settings.api_base}" if self.settings.api_base else "the LLM provider"
        if self.settings.api_base and _missing_key_variables(self.settings.model):
            return f"{where} wants an API key (401): set {variable} in the environment"
        return f"{where} refused the API key in {variable} (401): {_first_line(exc)}"


@contextlib.contextmanager
def litellm_settings(responses: Path) -> Iterator[None]:
    """LiteLLM's module-wide settings for the length of one run, put back afterwards: the disk response cache
    (LiteLLM has no per-Router cache), parameters a provider does not take dropped (e.g. ``response_format``)
    rather than refused, and no debug banner on errors."""
    import litellm
    from litellm.caching.caching import Cache

    from synthembed.synth.cache import DiskResponseCache

    cache = Cache(type="local")
    cache.cache = DiskResponseCache(responses)
    wanted = {"cache": cache, "drop_params": True, "suppress_debug_info": True}
    previous = {name: getattr(litellm, name) for name in wanted}
    for name, value in wanted.items():
        setattr(litellm, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(litellm, name, value)
        cache.cache.close()


def _check_provider(model: str) -> None:
    """A model string whose provider LiteLLM does not know is a configuration error, found before sending."""
    import litellm

    if is_local(model):
        return
    try:
        litellm.get_llm_provider(model)
    except litellm.BadRequestError:
        raise UserError(
            f"llm.model {model}: LiteLLM knows no such provider; write PROVIDER/MODEL, e.g. openai/gpt-4o-mini "
            "(the providers: https://docs.litellm.ai/docs/providers)"
        ) from None


def _is_connection_error(exc: Exception) -> bool:
    """Nothing listening, DNS, TLS: LiteLLM reports some of these as a 500 that says "Connection error"."""
    import litellm

    return isinstance(exc, litellm.APIConnectionError) or "Connection error" in str(exc)


def _failure_reason(exc: Exception) -> str:
    """How a failed request is counted (metrics' ``rejected_by_reason``); the run goes on without it."""
    import litellm

    if isinstance(exc, litellm.Timeout):
        return "timeout"
    if isinstance(exc, litellm.RateLimitError):
        return "rate_limited"
    if _is_connection_error(exc):
        return "connection_error"
    if isinstance(exc, litellm.BadRequestError):  # one request the provider will not take, e.g. too long
        return "bad_request"
    return "server_error" if (getattr(exc, "status_code", 0) or 0) >= 500 else "request_failed"


def _missing_key_variables(model: str) -> list[str]:
    """The API-key variables that ``model``'s provider needs and the environment lacks (none for local/...)."""
    import litellm

    if is_local(model):
        return []
    missing = litellm.validate_environment(model=model).get("missing_keys") or []
    return [name for name in missing if name.endswith("_API_KEY")]


def _key_variable(model: str) -> str:
    """The variable that holds the key for ``model``'s provider: ``OPENAI_API_KEY`` for ``openai/...``."""
    import litellm

    try:
        provider = litellm.get_llm_provider(model)[1]
    except Exception:  # noqa: BLE001 - an unknown provider fails on its own when the request is sent
        provider = model.split("/", 1)[0]
    return f"{provider.upper().replace('-', '_')}_API_KEY"


def _cost(response: Any, hidden: dict[str, Any]) -> float | None:
    """The provider's price for this reply as LiteLLM knows it; None for models LiteLLM has no price for."""
    import litellm

    if hidden.get("response_cost") is not None:
        return float(hidden["response_cost"])
    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:  # noqa: BLE001 - unknown models simply have no price
        return None


def _first_line(exc: Exception) -> str:
    """The first line of a provider's message, with any secret value of the environment masked."""
    return redact(first_line(exc))
