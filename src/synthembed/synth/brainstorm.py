"""Brainstorm: the LLM invents task definitions for the four asymmetric kinds (sts and bitext have none).

Repeated tasks are dropped twice: exact repeats as they arrive, near repeats (``brainstorm.near_duplicate_similarity``,
by the reference encoder) once all answers are in, so the result depends on the answers, not on their order.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from synthembed.encoder.reference_encoder import load_reference, near_duplicates
from synthembed.io import write_jsonl
from synthembed.params import Params
from synthembed.pipeline.stage import StageResult
from synthembed.synth import prompts
from synthembed.synth.budget import task_list_tokens
from synthembed.synth.client import LLMClient, Reply, Request
from synthembed.synth.parsing import extract_json, salvage_strings
from synthembed.synth.stage import (
    answer_request,
    budget_metrics,
    llm_metrics,
    llm_result,
    request_seed,
    require_accepted,
)
from synthembed.synth.taxonomy import BRAINSTORM_SCHEMA, validate_tasks


def brainstorm_requests(config: Params) -> list[Request]:
    settings = config.brainstorm
    size = task_list_tokens(settings.tasks_per_request)
    requests = []
    for kind in dict.fromkeys(settings.kinds):
        prompt = prompts.render("brainstorm", kind, num_tasks=settings.tasks_per_request)
        for index in range(settings.requests_per_kind):
            seed = request_seed(config.seed, "brainstorm", kind, index)
            name = f"brainstorm_{kind}"
            requests.append(
                answer_request(config.llm, prompt, name, BRAINSTORM_SCHEMA, size, seed, kind=kind, request=index)
            )
    return requests


def drop_near_duplicates(rows: list[dict[str, Any]], similarity: float) -> tuple[list[dict[str, Any]], Counter[str]]:
    """``rows`` without the tasks whose definition is at least ``similarity`` close (cosine under the reference
    encoder) to an earlier task of its kind, and how many were dropped per kind. A small model rephrases its own
    tasks; each repeat would draw requests away from the distinct ones."""
    if not rows:
        return rows, Counter()
    vectors = load_reference().encode_documents([row["task"] for row in rows])
    by_kind: dict[str, list[int]] = {}
    for number, row in enumerate(rows):
        by_kind.setdefault(row["kind"], []).append(number)
    dropped = {numbers[i] for numbers in by_kind.values() for i in near_duplicates(vectors[numbers], similarity)}
    return [row for n, row in enumerate(rows) if n not in dropped], Counter(rows[n]["kind"] for n in dropped)


def run_brainstorm(config: Params) -> StageResult:
    """Write ``brainstorm.output`` (one task a line); return the metrics."""
    started = time.perf_counter()
    client = LLMClient(config.llm, "brainstorm")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    rejected: Counter[str] = Counter()
    per_kind: dict[str, Counter[str]] = {}

    def on_reply(reply: Reply) -> str | None:
        kind = reply.request.meta["kind"]
        counts = per_kind.setdefault(kind, Counter())
        tasks = None
        if reply.content is not None:
            # A list cut off by max_tokens still holds complete task strings worth keeping.
            tasks = validate_tasks(extract_json(reply.content)) or validate_tasks(salvage_strings(reply.content))
        reason = reply.error or (None if tasks else "no_task_list")
        if reason:
            rejected[reason] += 1
            counts[reason] += 1
            return reason
        for task in tasks or []:
            if (kind, task) in found:
                rejected["duplicate_task"] += 1
                counts["duplicate_task"] += 1
                continue
            found[(kind, task)] = {
                "kind": kind,
                "task": task,
                "request": reply.request.meta["request"],
                "model": reply.model,
            }
            counts["tasks"] += 1
        return None

    requests = brainstorm_requests(config)
    stats = client.run(requests, on_reply, desc="brainstorm")
    rows = sorted(found.values(), key=lambda row: (row["kind"], row["request"]))
    if config.brainstorm.near_duplicate_similarity is not None:
        rows, repeats = drop_near_duplicates(rows, config.brainstorm.near_duplicate_similarity)
        for kind, count in repeats.items():
            rejected["near_duplicate_task"] += count
            per_kind[kind]["near_duplicate_task"] = count
            per_kind[kind]["tasks"] -= count
    require_accepted("brainstorm", len(requests), len(rows), rejected, config.llm.cache_dir)
    write_jsonl(config.brainstorm.output, rows)
    metrics = llm_metrics(stats, config.llm.model, time.perf_counter() - started, len(rows), rejected)
    metrics["tasks_per_kind"] = {kind: counts["tasks"] for kind, counts in sorted(per_kind.items())}
    metrics["per_kind"] = {kind: dict(counts) for kind, counts in sorted(per_kind.items())}
    metrics |= budget_metrics(requests)
    return llm_result("brainstorm", metrics, "tasks", config.llm)
