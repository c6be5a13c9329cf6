"""Generate: one training example per request, from a sampled task, kind and template parameters.

Requests are planned from ``seed`` alone (kind by weight, task uniformly from the brainstormed ones, template
parameters from the paper's spaces in ``taxonomy``), so a re-run or a resumed run asks for exactly the same
prompts; they are made one at a time as the client takes them, and accepted records wait on disk, so memory
stays flat in the number of requests. Each request's ``max_tokens`` is sized from its kind and parameters
(``budget``).
sts and bitext have no brainstormed task: their prompts come from the template parameters only, and their
records carry the fixed instruction the paper trains them with (``taxonomy.FIXED_TASKS``).
With ``generate.corpus`` set, the same client then asks for a task and a query per sampled corpus document
(``grounded``), written to ``generate.grounded_output``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from synthembed.errors import UserError
from synthembed.io import read_jsonl, write_jsonl
from synthembed.params import Params
from synthembed.pipeline.stage import StageResult
from synthembed.synth import grounded, prompts
from synthembed.synth.budget import answer_tokens
from synthembed.synth.client import LLMClient, Reply, Request, is_local
from synthembed.synth.stage import (
    AcceptedRecords,
    Budgets,
    Rejections,
    answer_request,
    llm_metrics,
    llm_result,
    reply_json,
    request_seed,
    require_accepted,
)
from synthembed.synth.taxonomy import FIXED_TASKS, allowed_languages, json_schema, kind_weights, sample_params, validate


def weights_of(config: Params) -> dict[str, float]:
    """``generate.kinds`` resolved for ``llm.model`` (``auto`` depends on whether the model is the local one)."""
    return kind_weights(config.generate.kinds, is_local(config.llm.model))


def load_tasks(config: Params) -> dict[str, list[str]]:
    """Brainstormed tasks per kind, for every weighted kind that needs them."""
    weights = weights_of(config)
    needed = [k for k, w in weights.items() if w > 0 and k not in FIXED_TASKS]
    if not needed:
        return {}
    path = Path(config.brainstorm.output)
    if not path.exists():
        raise UserError(f"{path} not found: run `synthembed brainstorm` first (generate.kinds needs {needed[0]})")
    tasks: dict[str, list[str]] = defaultdict(list)
    for row in read_jsonl(path):
        if isinstance(row.get("kind"), str) and isinstance(row.get("task"), str):
            tasks[row["kind"]].append(row["task"])
    missing = [kind for kind in needed if not tasks.get(kind)]
    if len(missing) == len(needed) and not any(weights.get(k, 0) > 0 for k in FIXED_TASKS):
        raise UserError(f"{path} holds no task for any weighted kind ({', '.join(missing)}); brainstorm again")
    if missing:
        # A weak model may brainstorm nothing usable for a kind: generate the other kinds and say so.
        tqdm.write(f"warning: {path} holds no task for {', '.join(missing)}; those kinds are skipped")
    return dict(tasks)


def iter_requests(config: Params, tasks: dict[str, list[str]]) -> Iterator[Request]:
    """The run's requests in plan order, fixed by ``config.seed``, made one at a time as the client takes them:
    a paper-scale plan (``generate.num_examples`` of them) is never in memory whole. Bad weights fail here,
    before the first request is made."""
    weights = {
        kind: weight
        for kind, weight in weights_of(config).items()
        if weight > 0 and (kind in FIXED_TASKS or tasks.get(kind))
    }
    if not weights:
        raise UserError("generate.kinds gives every kind weight 0; give at least one a positive weight")
    languages = allowed_languages(config.generate.languages)

    def planned() -> Iterator[Request]:
        rng = random.Random(config.seed)
        for index in range(config.generate.num_examples):
            kind = rng.choices(list(weights), list(weights.values()))[0]
            task = FIXED_TASKS.get(kind) or rng.choice(tasks[kind])
            params = sample_params(kind, rng, languages)
            prompt = prompts.render("generate", kind, task=task, **params)
            size = answer_tokens(kind, params)
            seed = request_seed(config.seed, "generate", index)
            meta = {"index": index, "kind": kind, "task": task, "params": params}
            yield answer_request(config.llm, prompt, kind, json_schema(kind), size, seed, **meta)

    return planned()


def plan_requests(config: Params, tasks: dict[str, list[str]]) -> list[Request]:
    """All of the run's requests at once, for a plan small enough to hold."""
    return list(iter_requests(config, tasks))


def planned_requests(config: Params) -> Iterator[Request]:
    """The requests a run would send, examples then grounded ones (``synthembed generate --dry-run``)."""
    requests = iter_requests(config, load_tasks(config))
    documents = grounded.load_documents(config) if config.generate.corpus else []
    return itertools.chain(requests, grounded.plan_grounded(config, documents))


def run_generate(config: Params) -> StageResult:
    """Write ``generate.output`` (validated examples) and, with ``generate.corpus``, ``generate.grounded_output``;
    return the metrics."""
    started = time.perf_counter()
    tasks = load_tasks(config)
    requests = iter_requests(config, tasks)
    documents = grounded.load_documents(config) if config.generate.corpus else []
    grounded_requests = grounded.plan_grounded(config, documents)
    client = LLMClient(config.llm, "generate")
    planned = config.generate.num_examples
    reject = Rejections()
    accepted = AcceptedRecords()
    budgets = Budgets()

    def on_reply(reply: Reply) -> str | None:
        meta = reply.request.meta
        value, reason = reply_json(reply)
        data, reason = (None, reason) if value is None else validate(meta["kind"], value)
        if data is None:
            return reject(meta["kind"], reason or "invalid", reply.cost_usd)
        params = meta["params"]
        record = {
            "kind": meta["kind"],
            "task": meta["task"],
            "language": params.get("language") or params["src_lang"],
            "params": params,
            "model": reply.model,
            "data": data,
        }
        accepted.add(meta["index"], record, reply.cost_usd)
        return None

    try:
        stats = client.run(budgets.count(requests), on_reply, desc="generate", total=planned)
        # Drop exact duplicates in request order, so a resumed run keeps the same records as a clean one.
        kept, seen = [], set()
        for index, record, cost_usd in accepted.in_order():
            fingerprint = json.dumps([record["kind"], record["data"]], sort_keys=True, ensure_ascii=False)
            digest = hashlib.sha256(fingerprint.encode("utf-8")).digest()
            if digest in seen:
                reject(record["kind"], "duplicate", cost_usd)
                continue
            seen.add(digest)
            reject.valid(record["kind"], cost_usd)
            kept.append(index)
        require_accepted("generate", planned, len(kept), reject.total, config.llm.cache_dir)
        write_jsonl(config.generate.output, (record for _, record, _ in accepted.in_order(kept)))
    finally:
        accepted.close()
    metrics = llm_metrics(stats, config.llm.model, time.perf_counter() - started, len(kept), reject.total)
    metrics["planned"] = planned
    metrics["per_kind"] = reject.by_kind()
    metrics["cost_per_kind"] = reject.cost_by_kind()
    weights = weights_of(config)
    metrics["kind_weights"] = {kind: round(weight / sum(weights.values()), 4) for kind, weight in weights.items()}
    metrics |= budgets.metrics()
    result = llm_result("generate", metrics, "valid examples", config.llm)
    if not config.generate.corpus:
        return result
    found = grounded.run_grounded(config, client, grounded_requests) | {"corpus_documents": len(documents)}
    metrics["grounded"] = found
    summary = f"{result.summary}; {found['valid']} grounded records ({found['rejected']} rejected) in {found['output']}"
    if found["budget_exhausted"] and not metrics["budget_exhausted"]:
        summary += f", stopped at the budget (llm.budget_usd), {found['skipped_for_budget']} requests not sent"
    warnings = [f"grounded: {w}" for w in llm_result("grounded", found, "records", config.llm).warnings]
    return dataclasses.replace(result, metrics=metrics, summary=summary, warnings=(*result.warnings, *warnings))
