"""Every LLM call of the pipeline: LiteLLM Router (fallbacks, retries with backoff), a concurrency bound,
the disk cache and journal, cost accounting, the budget stop, and a live progress bar.

``llm.mode: batch`` sends what journal and cache do not answer through the provider's batch API instead
(``synth.batch``); each of its lines becomes a reply by the same journal, cache and accounting steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import openai
from tqdm import tqdm

from synthembed.errors import UserError, first_line
from synthembed.params import LLMParams
from synthembed.secrets import redact
from synthembed.synth.batch import BatchRun, LineResult, batch_cost, check_model

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

    def prompt_tokens(self, model: str) -> int:
        """The prompt's size in ``model``'s tokens (LiteLLM's count): with ``max_tokens``, the most a provider can
        bill for this request, which the cost estimate and the batch budget both price."""
        import litellm

        return litellm.token_counter(model=model, messages=self.messages)


@dataclass
class Reply:
    request: Request
    content: str | None = None
    model: str | None = None
    source: str = "llm"  # llm | cache | journal
    error: str | None = None
    finish_reason: str | None = None  # as LiteLLM reports it: stop, length, ...
    cost_usd: float = 0.0  # what this run paid for it: 0 for a journal, cache or unpriced answer

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
            check_provider(model)
        if settings.mode == "batch":
            check_model(settings.model)
        if not settings.api_base:
            for model in (settings.model, *settings.fallbacks):
                if missing := missing_key_variables(model):
                    raise UserError(
                        f"llm.model {model} needs an API key: set {' or '.join(missing)} in the environment"
                    )
        self.stage = journal_name
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
            if missing_key_variables(model):
                deployment["api_key"] = PLACEHOLDER_KEY
        return deployment

    def sampling(self, request: Request) -> dict[str, Any]:
        return {
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
            "max_tokens": request.max_tokens,
        }

    def completion_params(self, request: Request) -> dict[str, Any]:
        """The chat-completion parameters of ``request``: what an online call sends and a batch line carries."""
        from synthembed.synth.taxonomy import response_format

        return {
            "messages": request.messages,
            "response_format": response_format(request.schema_name, request.schema),
            "seed": request.seed,
            **self.sampling(request),
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

    def run(
        self, requests: Iterable[Request], on_reply: Callable[[Reply], Outcome], desc: str, total: int | None = None
    ) -> Stats:
        """Answer every request (or stop at the budget); ``on_reply`` parses each answer as it arrives.

        ``requests`` is read once, in order, as the run goes: with ``total`` (how many it yields) a planner can
        make them one at a time, so a paper-scale plan is never in memory whole. A client may run several
        batches (generate's examples, then its grounded requests): the counts and the budget run on across them,
        and each run reopens the journal that the previous one closed."""
        if total is None:
            requests = list(requests)
            total = len(requests)
        if self.journal.closed:
            self.journal = type(self.journal)(self.journal.path)
        try:
            with litellm_settings(Path(self.settings.cache_dir) / "responses"):
                if self.settings.mode == "batch":
                    self._run_batch(requests, total, on_reply, desc)
                else:
                    asyncio.run(self._run_all(requests, total, on_reply, desc))
        finally:
            self.journal.close()
        return self.stats

    async def _run_all(
        self, requests: Iterable[Request], total: int, on_reply: Callable[[Reply], Outcome], desc: str
    ) -> None:
        """``llm.max_concurrency`` workers take the requests in plan order from one iterator: as many coroutines as
        requests in flight, not one per planned request (a paper-scale run plans hundreds of thousands)."""
        progress = Progress(self.stats, total, desc)
        planned = iter(requests)

        async def worker() -> None:
            for request in planned:  # next() never awaits, so no two workers take the same request
                progress.done(await self._answer(request), on_reply)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.settings.max_concurrency, total))))
        finally:
            progress.close()

    def _run_batch(
        self, requests: Iterable[Request], total: int, on_reply: Callable[[Reply], Outcome], desc: str
    ) -> None:
        """Answer from the journal and the response cache what they hold, send the rest (as far as the budget
        covers) as provider batches, and turn each line into a reply as an online answer is made."""
        run = BatchRun(Path(self.settings.cache_dir) / "batches", self.stage, self._batch_api())
        progress = Progress(self.stats, total, desc)
        waiting: dict[str, list[Request]] = {}  # by key; an identical request is answered from the first's journal
        try:
            for request in requests:
                key = self.request_key(request)
                if key in waiting:
                    waiting[key].append(request)
                elif (reply := self._from_journal(request, key) or self._from_cache(request, key)) is not None:
                    progress.done(reply, on_reply)
                else:
                    waiting[key] = [request]
            lines, skipped = self._affordable(waiting, run.sent())
            for _ in range(skipped):
                progress.done(None, on_reply)

            def collect(line: LineResult) -> None:
                first, *identical = waiting.pop(line.custom_id)
                reply = self._from_line(first, line)
                progress.done(reply, on_reply)
                for request in identical:
                    journaled = self._from_journal(request, line.custom_id)
                    progress.done(journaled or replace(reply, request=request), on_reply)

            run.run(lines, set(waiting), lambda key: key in self.journal, collect, progress.batches)
        except openai.APIError as exc:  # the batch API's calls, their retries spent: a rerun resumes
            raise self._fatal(exc) or UserError(
                f"the provider's batch API failed ({type(exc).__name__}): {_first_line(exc)}; "
                "run the command again to resume"
            ) from None
        finally:
            progress.close()

    def _affordable(self, waiting: dict[str, list[Request]], sent: set[str]) -> tuple[dict[str, dict[str, Any]], int]:
        """The batch lines to submit (key -> body), and how many requests were skipped for the budget (taken out
        of ``waiting``). A batch is paid for before any answer is seen, so the online stop at the accounted
        cost would come too late: in plan order, a request goes only while ``llm.budget_usd`` covers the most it
        can cost (its prompt and all of its ``max_tokens`` at batch prices) beside what is spent and what earlier
        runs sent (``sent``)."""
        import litellm

        model = self.settings.model
        priced = batch_cost(model, 0, 0) is not None

        def ceiling(request: Request) -> float:
            if not priced:  # no price to multiply: skip counting the tokens
                return 0.0
            return batch_cost(model, request.prompt_tokens(model), request.max_tokens) or 0.0

        left = self.settings.budget_usd - self.stats.cost_usd
        left -= sum(ceiling(group[0]) for key, group in waiting.items() if key in sent)
        served_name = litellm.get_llm_provider(model)[0]  # the model as the provider knows it, as online sends it
        lines, skipped = {}, 0
        for key, group in list(waiting.items()):
            if key in sent:
                continue
            cost = ceiling(group[0])
            if self.stats.budget_exhausted or cost > left:
                self.stats.budget_exhausted = True
                skipped += len(waiting.pop(key))
                continue
            left -= cost
            lines[key] = {"model": served_name, **self.completion_params(group[0])}
        self.stats.skipped_for_budget += skipped
        return lines, skipped

    def _batch_api(self) -> dict[str, Any]:
        """What every batch-API call of LiteLLM takes: the provider, the key and server, timeout and retries."""
        import litellm

        deployment = self._deployment(self.settings.model)
        return {
            "custom_llm_provider": litellm.get_llm_provider(self.settings.model)[1],
            "timeout": self.settings.timeout_s,
            "max_retries": self.settings.max_retries,
            **{name: deployment[name] for name in ("api_base", "api_key") if name in deployment},
        }

    async def _answer(self, request: Request) -> Reply | None:
        key = self.request_key(request)
        if (reply := self._from_journal(request, key)) is not None:
            return reply
        if self._over_budget():
            self.stats.skipped_for_budget += 1
            return None
        return await self._call(request, key)

    def _from_journal(self, request: Request, key: str) -> Reply | None:
        entry = self.journal.get(key)
        if entry is None:
            return None
        self.stats.journal_hits += 1
        finish = entry.get("finish_reason")
        return Reply(request, content=entry["content"], model=entry["model"], source="journal", finish_reason=finish)

    def _from_cache(self, request: Request, key: str) -> Reply | None:
        """The answer LiteLLM's response cache holds for ``request``, found as an online call finds it."""
        import litellm

        cached = litellm.cache.get_cache(cache_key=self._cache_key(request)) if litellm.cache else None
        if not isinstance(cached, dict) or not cached.get("choices"):
            return None
        choice = cached["choices"][0]
        content = (choice.get("message") or {}).get("content") or ""
        model = cached.get("model") or self.settings.model
        return self._record(request, key, content, model, choice.get("finish_reason"), None, None, cache_hit=True)

    def _from_line(self, request: Request, line: LineResult) -> Reply:
        """A batch line as the reply an online call would have given: counted, priced at batch rates, journaled
        before it is parsed, and stored in the response cache under the online call's key."""
        import litellm

        if line.body is None:
            return self._failed(request, line.error or "request_failed")
        body = line.body
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        tokens = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        cost = batch_cost(self.settings.model, *tokens)
        model = body.get("model") or self.settings.model
        content = choice["message"].get("content") or ""
        finish = choice.get("finish_reason")
        reply = self._record(request, line.custom_id, content, model, finish, tokens, cost, cache_hit=False)
        if litellm.cache:
            litellm.cache.add_cache(litellm.ModelResponse(**body), cache_key=self._cache_key(request))
        return reply

    def _cache_key(self, request: Request) -> str:
        """The key LiteLLM's response cache files an online call under: the Router's model group for the
        model, the chat parameters, then the ``stream=False`` LiteLLM adds (the key follows this order)."""
        import litellm

        return litellm.cache.get_cache_key(model=PRIMARY, **self.completion_params(request), stream=False)

    def _over_budget(self) -> bool:
        if self.stats.cost_usd > 0 and self.stats.cost_usd >= self.settings.budget_usd:
            self.stats.budget_exhausted = True
        return self.stats.budget_exhausted

    async def _call(self, request: Request, key: str) -> Reply:
        try:
            response = await self.router.acompletion(model=PRIMARY, caching=True, **self.completion_params(request))
        except openai.APIError as exc:  # the base of every LiteLLM API error; the retries are spent by now
            if (fatal := self._fatal(exc)) is not None:
                raise fatal from None
            return self._failed(request, _failure_reason(exc))
        self._answered = True
        hidden = getattr(response, "_hidden_params", {}) or {}
        content = response.choices[0].message.content or ""
        finish = response.choices[0].finish_reason
        model = response.model or self.settings.model
        cache_hit = bool(hidden.get("cache_hit"))
        usage = getattr(response, "usage", None)
        tokens = (getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0)
        cost = None if cache_hit else _cost(response, hidden)
        return self._record(request, key, content, model, finish, tokens, cost, cache_hit)

    def _record(
        self,
        request: Request,
        key: str,
        content: str,
        model: str,
        finish: str | None,
        tokens: tuple[int, int] | None,
        cost: float | None,
        cache_hit: bool,
    ) -> Reply:
        """Count an answer (``tokens`` and ``cost`` unless it came from the cache; None: unpriced) and journal
        it, durable before ``on_reply`` parses it: every answer, online or from a batch, passes here."""
        if cache_hit:
            self.stats.cache_hits += 1
            cost = 0.0
        else:
            self.stats.requests += 1
            prompt_tokens, completion_tokens = tokens or (0, 0)
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
            if cost is None:
                self.stats.unpriced_replies += 1
                cost = 0.0
            self.stats.cost_usd += cost
        entry = {"key": key, "model": model, "content": content, "finish_reason": finish, "cost_usd": cost}
        self.journal.append({**entry, "at": time.time()})
        source = "cache" if cache_hit else "llm"
        return Reply(request, content=content, model=model, source=source, finish_reason=finish, cost_usd=cost)

    def _failed(self, request: Request, reason: str) -> Reply:
        """A request that reached the provider and got no answer: counted by reason, never journaled, so a
        rerun asks again."""
        self.stats.requests += 1
        self.stats.failed[reason] += 1
        return Reply(request, error=reason)

    def _fatal(self, exc: openai.APIError) -> UserError | None:
        """The failures no retry or other request mends, as one line: a refused key, a refused request (no
        such model, no access), nothing listening before any answer came."""
        if isinstance(exc, openai.AuthenticationError):
            return UserError(self._refused_key(exc))
        if isinstance(exc, (openai.PermissionDeniedError, openai.NotFoundError)):
            return UserError(f"the LLM provider refused the request ({type(exc).__name__}): {_first_line(exc)}")
        if _is_connection_error(exc) and not self._answered:
            where = self.settings.api_base or f"the provider of {self.settings.model}"
            return UserError(
                f"nothing answers at {where} (connection failed after {self.settings.max_retries} retries): "
                "start the server or correct llm.api_base"
            )
        return None

    def _refused_key(self, exc: Exception) -> str:
        """A 401 as one line that names the variable to set."""
        variable = _key_variable(self.settings.model)
        where = f"the LLM server at {self.settings.api_base}" if self.settings.api_base else "the LLM provider"
        if self.settings.api_base and missing_key_variables(self.settings.model):
            return f"{where} wants an API key (401): set {variable} in the environment"
        return f"{where} refused the API key in {variable} (401): {_first_line(exc)}"


class Progress:
    """A run's live bar: requests done, with cached, rejected and cost beside (and a batch run's batches)."""

    def __init__(self, stats: Stats, total: int, desc: str):
        self.stats = stats
        self.rejected: Counter[str] = Counter()
        self.batch_counts = ""
        self.bar = tqdm(total=total, desc=desc, unit="req", dynamic_ncols=True, mininterval=0.5)

    def done(self, reply: Reply | None, on_reply: Callable[[Reply], Outcome]) -> None:
        """Hand ``reply`` to ``on_reply`` and count it; None is a request not sent for the budget."""
        if reply is not None and (outcome := on_reply(reply)) is not None:
            self.rejected[outcome] += 1
        self.bar.update(1)
        self._show(refresh=False)

    def batches(self, counts: str) -> None:
        self.batch_counts = counts
        self._show(refresh=True)

    def _show(self, refresh: bool) -> None:
        shown = {"batches": self.batch_counts} if self.batch_counts else {}
        self.bar.set_postfix(
            cached=self.stats.cache_hits + self.stats.journal_hits,
            rejected=sum(self.rejected.values()),
            cost=f"${self.stats.cost_usd:.4f}",
            **shown,
            refresh=refresh,
        )

    def close(self) -> None:
        self.bar.close()


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


def check_provider(model: str) -> None:
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


def missing_key_variables(model: str) -> list[str]:
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
