"""Corpus-grounded generation: the LLM writes the task and the query that a sampled corpus document answers.

``generate.grounded_examples`` documents of ``generate.corpus`` are sampled with ``seed`` (without replacement).
A document longer than a sentence gets the short_long shape (a retrieval task whose documents look like it,
and what a user would type to find it, with query parameters sampled from the short_long space); a shorter
one the short_short shape (a matching task, and a short input that it matches). The document is the positive,
so the LLM writes only the short side: its budget is a sentence-long task and the query (``budget``).

The records are in the labeled-set format (``instruction``, ``query``, ``positive``, no ``negative``; plus
provenance that ``data.labeled.read_labeled`` ignores). ``prepare.grounded`` reads them: it drops the pairs the
reference encoder does not link (round trip) and mines their hard negatives from ``prepare.negative_corpus``,
which for the offline default is the same SciFact corpus the documents were sampled from.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

from synthembed.corpus import Document, read_corpus
from synthembed.errors import UserError
from synthembed.io import write_jsonl
from synthembed.params import Params
from synthembed.synth import prompts
from synthembed.synth.budget import SENTENCE_WORDS, answer_tokens, english_rate
from synthembed.synth.client import LLMClient, Reply, Request
from synthembed.synth.stage import (
    Rejections,
    answer_request,
    budget_metrics,
    llm_metrics,
    reply_json,
    request_seed,
    require_accepted,
)
from synthembed.synth.taxonomy import PARAMETER_SPACES, json_schema, validate_grounded

LONG_SHAPE, SHORT_SHAPE = "grounded_short_long", "grounded_short_short"
PROMPT_DOCUMENT_WORDS = 300  # the prompt shows at most this many words of a document
# short_long's query parameters; num_words is the document's own length here.
QUERY_SPACE = {name: values for name, values in PARAMETER_SPACES["short_long"].items() if name != "num_words"}


def load_documents(config: Params) -> list[Document]:
    """``generate.corpus`` read by the project's corpus reader; a missing or empty corpus is one line."""
    try:
        return read_corpus(config.generate.corpus)
    except UserError as exc:
        raise UserError(f"generate.corpus: {exc}") from None


def shape_of(document: Document) -> str:
    """short_long for a document longer than a sentence (``budget.SENTENCE_WORDS``), short_short otherwise."""
    return LONG_SHAPE if len(document.content.split()) > SENTENCE_WORDS else SHORT_SHAPE


def shown(text: str) -> str:
    """The document as the prompt shows it: white space collapsed, cut at ``PROMPT_DOCUMENT_WORDS`` words."""
    words = text.split()
    return " ".join(words[:PROMPT_DOCUMENT_WORDS]) + (" ..." if len(words) > PROMPT_DOCUMENT_WORDS else "")


def plan_grounded(config: Params, documents: list[Document]) -> list[Request]:
    """One request per sampled document, fixed by ``config.seed``."""
    rng = random.Random(request_seed(config.seed, "grounded"))
    sampled = rng.sample(documents, min(config.generate.grounded_examples, len(documents)))
    requests = []
    for index, document in enumerate(sampled):
        shape = shape_of(document)
        params = {name: rng.choice(values) for name, values in QUERY_SPACE.items()} if shape == LONG_SHAPE else {}
        prompt = prompts.render("generate", shape, document=shown(document.content), **params)
        size = answer_tokens(shape, params, english=english_rate(document.content))
        seed = request_seed(config.seed, "grounded", document.id)
        meta = {"index": index, "kind": shape, "document": document, "params": params}
        requests.append(answer_request(config.llm, prompt, shape, json_schema(shape), size, seed, **meta))
    return requests


def run_grounded(config: Params, client: LLMClient, requests: list[Request]) -> dict[str, Any]:
    """Send ``requests`` through ``client``, write ``generate.grounded_output``; return its metrics."""
    started = time.perf_counter()
    before = copy.deepcopy(client.stats)  # the client's counts run on across its batches
    records: dict[int, dict[str, Any]] = {}
    reject = Rejections()

    def on_reply(reply: Reply) -> str | None:  # the client journaled the raw reply before this runs
        meta = reply.request.meta
        document: Document = meta["document"]
        value, reason = reply_json(reply)
        data, reason = (None, reason) if value is None else validate_grounded(value, document.content)
        if data is None:
            return reject(meta["kind"], reason or "invalid", reply.cost_usd)
        reject.valid(meta["kind"], reply.cost_usd)
        records[meta["index"]] = {
            "instruction": data["task"],
            "query": data["query"],
            "positive": document.content,
            "doc_id": document.id,
            "kind": meta["kind"],
            "params": meta["params"],
            "model": reply.model,
        }
        return None

    stats = client.run(requests, on_reply, desc="grounded").since(before)
    if not stats.budget_exhausted:  # stopped at the budget, the summary says so; else nothing usable is a failure
        require_accepted("generate (grounded)", len(requests), len(records), reject.total, config.llm.cache_dir)
    write_jsonl(config.generate.grounded_output, (records[index] for index in sorted(records)))
    metrics = llm_metrics(stats, config.llm.model, time.perf_counter() - started, len(records), reject.total)
    metrics["planned"] = len(requests)
    metrics["output"] = config.generate.grounded_output
    metrics["per_shape"] = reject.by_kind()
    metrics["cost_per_shape"] = reject.cost_by_kind()
    return metrics | budget_metrics(requests)
