"""What a brainstorm or generate run would cost, worked out from its planned requests before any is sent.

The planners are the ones the run itself uses, so the requests are exactly those it would send. Prompt tokens
are LiteLLM's count of each request's messages; completion tokens are each request's ``max_tokens``, the most
the provider may bill for the answer, not a forecast of it. The costs are therefore ceilings on the answers'
side: a run pays for the tokens its answers actually take, which are fewer unless every answer runs into its
budget. They are for a run with an empty cache (cached and journaled answers cost nothing), priced for
``llm.model`` (a request answered by a fallback is billed at that model's price), and they leave out retries
and the few tokens a provider adds to the prompt for the answer's JSON schema.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from synthembed.params import LLMParams
from synthembed.synth.batch import batch_cost
from synthembed.synth.client import Request, check_provider, is_local, missing_key_variables
from synthembed.synth.stage import Budgets


@dataclass(frozen=True)
class KindEstimate:
    """The planned requests of one kind (or grounded shape), or of the whole run."""

    kind: str
    requests: int
    prompt_tokens: int
    completion_tokens: int  # the sum of the requests' max_tokens: a ceiling
    online_usd: float | None  # None: the model is not in LiteLLM's price table
    batch_usd: float | None


@dataclass(frozen=True)
class Estimate:
    """A run's planned requests per kind and in all, for ``llm.model`` at LiteLLM's prices."""

    model: str
    priced: bool  # False: LiteLLM's price table has no entry for the model
    kinds: list[KindEstimate]
    total: KindEstimate
    notes: list[str]  # what a real run would need or do that the numbers do not show


def online_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """What these tokens cost online at LiteLLM's prices (the table a reply's cost comes from); None for a model
    it has no price for, as for the offline ``local/...`` model. Batch prices: ``batch.batch_cost``."""
    import litellm

    if is_local(model):
        return None
    quiet = litellm.suppress_debug_info
    litellm.suppress_debug_info = True  # no "Provider List" banner on stdout for an unlisted model
    try:
        prompt_usd, completion_usd = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # noqa: BLE001 - LiteLLM raises a plain Exception for a model it has no entry for
        return None
    finally:
        litellm.suppress_debug_info = quiet
    return prompt_usd + completion_usd


def estimate(requests: Iterable[Request], llm: LLMParams) -> Estimate:
    """Requests, prompt and completion tokens and their cost per kind (sorted, like the metrics) and in all, in
    one pass over ``requests`` (a paper-scale plan is counted as it is made, never held).

    The model strings are checked as a real run checks them (an unknown provider is one line); a missing API
    key is only a note, since nothing is sent."""
    for model in (llm.model, *llm.fallbacks):
        check_provider(model)
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # kind -> requests, prompt, completion tokens
    budgets = Budgets()
    for request in budgets.count(requests):
        counts = sums[request.meta["kind"]]
        counts[0] += 1
        counts[1] += request.prompt_tokens(llm.model)
        counts[2] += request.max_tokens
    kinds = [_priced(kind, *counts, llm.model) for kind, counts in sorted(sums.items())]
    total = _priced(
        "total",
        sum(row.requests for row in kinds),
        sum(row.prompt_tokens for row in kinds),
        sum(row.completion_tokens for row in kinds),
        llm.model,
    )
    notes = []
    if not llm.api_base and (missing := missing_key_variables(llm.model)):
        notes.append(f"a real run of {llm.model} needs {' or '.join(missing)} in the environment (not set)")
    if (capped := budgets.capped) and not is_local(llm.model):
        notes.append(
            f"llm.max_tokens {llm.max_tokens} caps {capped} requests below the size their answers need "
            "(llm.max_tokens: auto raises the ceiling, and fewer answers are cut)"
        )
    if total.online_usd is not None and total.online_usd > llm.budget_usd:
        notes.append(f"the online ceiling is above llm.budget_usd (${llm.budget_usd:g}): a run stops at the budget")
    return Estimate(llm.model, online_cost(llm.model, 0, 0) is not None, kinds, total, notes)


def format_estimate(found: Estimate) -> str:
    """The estimate as an aligned table, a line with the prices it used, and why its costs are ceilings."""
    header = ["kind", "requests", "prompt tokens", "completion tokens (max)", "online USD", "batch USD"]
    rows = [header] + [
        [
            row.kind,
            str(row.requests),
            f"{row.prompt_tokens:,}",
            f"{row.completion_tokens:,}",
            _usd(row.online_usd),
            _usd(row.batch_usd),
        ]
        for row in (*found.kinds, found.total)
    ]
    widths = [max(len(cells[column]) for cells in rows) for column in range(len(header))]
    lines = [f"{found.total.requests} requests to {found.model} planned, none sent"]
    for cells in rows:  # the kind left-aligned, the numbers right-aligned
        numbers = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        lines.append("  ".join([cells[0].ljust(widths[0]), *numbers]))
    if not found.priced:
        lines.append(f"{found.model} is not in LiteLLM's price table: its tokens are counted, its cost is unpriced")
    else:
        million = 1_000_000
        lines.append(
            f"prices per 1M tokens (LiteLLM's table): input ${_per(online_cost, found.model, million, 0)}, "
            f"output ${_per(online_cost, found.model, 0, million)}; batch input "
            f"${_per(batch_cost, found.model, million, 0)}, output ${_per(batch_cost, found.model, 0, million)} "
            "(half of online where it lists no batch price)"
        )
    lines.append(
        "completion tokens are each request's max_tokens, a ceiling: the costs are upper bounds "
        "(for a run with an empty cache)"
    )
    return "\n".join(lines)


def _priced(kind: str, requests: int, prompt: int, completion: int, model: str) -> KindEstimate:
    online, batch = online_cost(model, prompt, completion), batch_cost(model, prompt, completion)
    return KindEstimate(kind, requests, prompt, completion, online, batch)


def _per(cost: Callable[[str, int, int], float | None], model: str, prompt: int, completion: int) -> str:
    return f"{cost(model, prompt, completion) or 0:g}"


def _usd(amount: float | None) -> str:
    return "unpriced" if amount is None else f"{amount:.4f}"
