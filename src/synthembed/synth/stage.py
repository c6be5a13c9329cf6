"""What brainstorm and generate share: the per-request seed and the metrics every LLM stage reports."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from synthembed.errors import UserError
from synthembed.params import LLMParams
from synthembed.pipeline.stage import StageResult
from synthembed.synth import prompts
from synthembed.synth.budget import capped
from synthembed.synth.client import Reply, Request, Stats, is_local
from synthembed.synth.parsing import extract_json


def request_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit sampling seed for one request, derived from the run's seed and its identity."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def answer_request(
    llm: LLMParams, prompt: str, schema_name: str, schema: dict[str, Any], size: int, seed: int, **meta: Any
) -> Request:
    """One request: its prompt as the only turn, the answer's JSON schema (the local provider decodes by it),
    ``max_tokens`` = the answer's ``size`` under ``llm.max_tokens``, its own seed; ``meta`` rides along."""
    return Request(
        messages=prompts.messages(prompt),
        schema_name=schema_name,
        schema=schema,
        max_tokens=capped(size, llm.max_tokens),
        seed=seed,
        meta={**meta, "answer_tokens": size},
    )


class AcceptedRecords:
    """Parsed answers kept in an unnamed temporary file until the stage writes them in plan order: answers
    arrive out of order, and a paper-scale run accepts hundreds of thousands. Only each record's offset and
    cost stay in memory; the file goes when the object is closed."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._at: dict[int, tuple[int, float]] = {}  # plan index -> (offset, what its answer cost)

    def add(self, index: int, record: dict[str, Any], cost_usd: float) -> None:
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self._at[index] = offset, cost_usd

    def in_order(self, indexes: Iterable[int] | None = None) -> Iterator[tuple[int, dict[str, Any], float]]:
        """(plan index, record, cost) of every record, or of ``indexes``, in plan order."""
        for index in sorted(self._at if indexes is None else indexes):
            offset, cost_usd = self._at[index]
            self._file.seek(offset)
            yield index, json.loads(self._file.readline()), cost_usd

    def close(self) -> None:
        self._file.close()


class Rejections:
    """Answers counted by outcome, in all and per kind (or grounded shape): the valid ones, the rejected ones by
    reason, and what each outcome cost in this run (``Reply.cost_usd``), so a kind's price per usable example
    shows the money its rejected answers wasted."""

    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        self.per_kind: dict[str, Counter[str]] = defaultdict(Counter)
        self.accepted_usd: dict[str, float] = defaultdict(float)
        self.rejected_usd: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # by kind, reason

    def __call__(self, kind: str, reason: str, cost_usd: float) -> str:
        self.total[reason] += 1
        self.per_kind[kind][f"rejected_{reason}"] += 1
        self.rejected_usd[kind][reason] += cost_usd
        return reason

    def valid(self, kind: str, cost_usd: float) -> None:
        self.per_kind[kind]["valid"] += 1
        self.accepted_usd[kind] += cost_usd

    def by_kind(self) -> dict[str, dict[str, int]]:
        return {kind: dict(sorted(counts.items())) for kind, counts in sorted(self.per_kind.items())}

    def cost_by_kind(self) -> dict[str, dict[str, Any]]:
        """Per kind: the accepted answers and their cost, the rejected answers' cost by reason, and
        ``cost_per_accepted_usd``, the kind's whole cost (rejected answers included) per accepted answer (None
        without one): times ``accepted`` it gives back what the kind cost."""
        costs = {}
        for kind in sorted(self.per_kind):
            accepted, rejected = self.per_kind[kind]["valid"], self.rejected_usd[kind]
            whole = self.accepted_usd[kind] + sum(rejected.values())
            costs[kind] = {
                "accepted": accepted,
                "accepted_cost_usd": round(self.accepted_usd[kind], 8),
                "rejected_cost_usd": {reason: round(usd, 8) for reason, usd in sorted(rejected.items())},
                "cost_per_accepted_usd": round(whole / accepted, 8) if accepted else None,
            }
        return costs


def reply_json(reply: Reply) -> tuple[Any, str | None]:
    """The JSON value a reply holds, or None and why not: the request failed, the answer was cut at its
    ``max_tokens`` (a partial document is no training example), or it holds no JSON."""
    if reply.error is not None:
        return None, reply.error
    if reply.truncated:
        return None, "truncated"
    value = extract_json(reply.content or "")
    return (None, "no_json") if value is None else (value, None)


def llm_metrics(stats: Stats, model: str, wall_s: float, valid: int, rejected: Counter) -> dict[str, Any]:
    """The numbers both stages report: traffic, cache use, tokens, cost, outcome counts and throughput."""
    answers = valid + sum(rejected.values())
    return {
        "model": model,
        "requests": stats.requests,
        "cache_hits": stats.cache_hits + stats.journal_hits,
        "journal_hits": stats.journal_hits,
        "valid": valid,
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "rejected_fraction": round(sum(rejected.values()) / answers, 4) if answers else 0.0,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost_usd": round(stats.cost_usd, 8),
        "unpriced_replies": stats.unpriced_replies,
        "budget_exhausted": stats.budget_exhausted,
        "skipped_for_budget": stats.skipped_for_budget,
        "wall_time_s": round(wall_s, 3),
        "records_per_s": round(valid / wall_s, 3) if wall_s > 0 else None,
    }


class Budgets:
    """The answer budgets sent, counted as the requests go by (a paper-scale plan is never held): their mean
    per kind, and how many requests ``llm.max_tokens`` capped below the size their kind and parameters call for
    (``meta["answer_tokens"]``)."""

    def __init__(self) -> None:
        self._by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind -> requests, their max_tokens
        self.capped = 0

    def count(self, requests: Iterable[Request]) -> Iterator[Request]:
        """``requests``, unchanged, each counted as it passes."""
        for request in requests:
            sizes = self._by_kind[request.meta["kind"]]
            sizes[0] += 1
            sizes[1] += request.max_tokens
            self.capped += request.max_tokens < request.meta["answer_tokens"]
            yield request

    def metrics(self) -> dict[str, Any]:
        by_kind = {kind: round(total / count, 1) for kind, (count, total) in sorted(self._by_kind.items())}
        return {"max_tokens_by_kind": by_kind, "capped_requests": self.capped}


def budget_metrics(requests: Iterable[Request]) -> dict[str, Any]:
    """``Budgets`` of a plan already in hand."""
    budgets = Budgets()
    for _ in budgets.count(requests):
        pass
    return budgets.metrics()


def llm_result(stage: str, metrics: dict[str, Any], what: str, settings: LLMParams) -> StageResult:
    """The stage's result: one summary line, a warning naming the reasons when too many answers were rejected
    (``llm.warn_rejected_fraction``), and one when an integer ``llm.max_tokens`` cut a hosted model's budgets."""
    summary = (
        f"{stage}: {metrics['valid']} {what}, {metrics['rejected']} rejected, "
        f"{metrics['requests']} requests, {metrics['cache_hits']} cached, "
        f"${metrics['cost_usd']:.4f}, {metrics['wall_time_s']:.1f} s"
    )
    if metrics["budget_exhausted"]:
        summary += f"; stopped at the budget (llm.budget_usd), {metrics['skipped_for_budget']} requests not sent"
    warnings = []
    if metrics["rejected_fraction"] > settings.warn_rejected_fraction:
        reasons = ", ".join(f"{count} {reason}" for reason, count in metrics["rejected_by_reason"].items())
        warnings.append(
            f"{metrics['rejected_fraction']:.0%} of the answers were rejected "
            f"(above llm.warn_rejected_fraction {settings.warn_rejected_fraction}): {reasons}"
        )
    if metrics["capped_requests"] and not is_local(settings.model):
        warnings.append(
            f"llm.max_tokens {settings.max_tokens} is below the budget of {metrics['capped_requests']} requests, "
            "whose answers may be cut (counted truncated); use llm.max_tokens: auto for a hosted model"
        )
    return StageResult(metrics, summary, warnings=tuple(warnings))


def require_accepted(stage: str, planned: int, accepted: int, rejected: Counter, cache_dir: str) -> None:
    """Zero usable answers from a non-empty plan is a failed stage, never an empty output that the next stage
    trains on (every failed request of a dead or hanging server ends here)."""
    if planned and not accepted:
        reasons = ", ".join(f"{count} {reason}" for reason, count in rejected.most_common()) or "none answered"
        raise UserError(
            f"{stage}: none of the {planned} requests gave a usable answer ({reasons}); nothing was written "
            f"(raw answers are kept in {cache_dir})"
        )
