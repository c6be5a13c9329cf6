"""Contamination audit: does any training record contain, or nearly repeat, a text an evaluation task queries?

The paper (Appendix B, "test set contamination") asks whether the LLM-written training data reproduces MTEB test
data, since the generating LLM may have read those test sets, and answers with an overlap search of the synthetic
data against the test queries. This module runs such a search over every training record (synthetic and labeled)
against the test split of every bundled task, with two checks that catch different leaks:

- **n-gram** (exact text): a record's query or positive, lowercased and cut into words, shares a run of ``n``
  words (13 by default, the GPT-3 contamination test) with a task's text, or contains a whole task text that is
  shorter than ``n`` but at least ``min_words`` words (STS sentences, tweets and claims are mostly short).
  It catches copies, also a test query pasted inside a longer document, but not paraphrases or one changed
  word in a short text, and it ignores texts under ``min_words`` words (common phrases, not leaks).
- **embedding** (meaning): the cosine similarity of a record's query to every query of the retrieval and
  reranking tasks under a reference encoder (all-MiniLM-L6-v2 in fp32 by default), flagged at or above a
  threshold. It catches near copies that share no n-gram: a short claim with one word changed or negated scores
  0.95-0.999 (SciFact's train split holds such twins of its test claims, citing the same abstracts). Looser
  paraphrases (0.85-0.95) pass at the default 0.95; over all tasks' texts, the shipped records came no closer
  than 0.75 to any text of the other bundled tasks.

Neither check looks at the corpus side of retrieval: SciFact's labeled records cite abstracts of SciFact's own
corpus, as MTEB's training sets do; only the texts a model is queried with are held out. The task texts are
encoded through the evaluation's :class:`~synthembed.evaluate.cache.EmbeddingCache` (same model fingerprint,
same empty prompt as the encoder's evaluation), so after the first run an audit encodes only new records.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthembed.data.records import TrainRecord
from synthembed.data.reference import encode_texts
from synthembed.encoder.reference_encoder import REFERENCE_ENCODER
from synthembed.errors import UserError

# Task texts shorter than n are matched whole from this many words. At 4 and 5 words, titles and phrases
# ("Global Burden of Disease Study" in NFCorpus, "a loss of function" in STS12) turned up inside 5 of the 912
# shipped SciFact abstracts; from 6 words on, none did (docs/training.md, "Contamination audit").
MIN_WORDS = 6
EXAMPLES = 3  # flagged records shown per task
SHOWN_CHARS = 200  # texts in the report are cut to this length
BLOCK = 2048  # rows of each side per similarity block: at most BLOCK x BLOCK scores (16 MB) at a time

# The embedding check compares with the queries of these task types only: paraphrased queries are the leak a
# copy test misses, and these few thousand texts encode in seconds, while the 60,000 texts of all tasks took
# minutes; every task's texts still get the n-gram check.
EMBEDDED_TYPES = ("Retrieval", "Reranking")
# The test-split columns a model is queried with, by MTEB task type (retrieval and reranking: the queries).
QUERIED_COLUMNS = {
    "STS": ("sentence1", "sentence2"),
    "PairClassification": ("sentence1", "sentence2"),
    "Classification": ("text",),
    "Clustering": ("sentences",),
    "Summarization": ("human_summaries",),
}


def evaluation_queries(data_dir: Path, tasks: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Task name -> the distinct test-split texts a model is queried with, for every bundled task (or ``tasks``).

    The tasks are built exactly as ``evaluate`` builds them (full splits), so the texts are those the model is
    scored on: their readers, files and filters (WikiQA's answered questions, SemEval's rated pairs, the SICK-R
    union) live in the task modules only. Per type: retrieval and reranking their queries, STS and pair
    classification both sentences, classification and clustering the test texts, and SummEval the human
    reference summaries. Those, not the machine summaries, because they are CNN/DailyMail highlights, text that
    public training sets carry (CNN/DM article-highlight pairs are in the training data of all-MiniLM-L6-v2 and
    of E5), while the machine summaries exist only in SummEval; the articles are never encoded.
    """
    return {name: texts for name, (_, texts) in _typed_queries(data_dir, tasks).items()}


def _typed_queries(data_dir: Path, tasks: Iterable[str] | None) -> dict[str, tuple[str, list[str]]]:
    """Task name -> (MTEB task type, its distinct queried texts), each task built and loaded once."""
    from synthembed.evaluate.tasks import SubsetSizes, bundled_tasks

    bundled = bundled_tasks(data_dir)
    names = list(bundled) if tasks is None else list(tasks)
    unknown = [name for name in names if name not in bundled]
    if unknown:
        raise UserError(f"unknown task {unknown[0]!r} for the contamination audit; bundled: {', '.join(bundled)}")
    queries = {}
    for name in names:
        task = bundled[name](SubsetSizes())
        task.load_data()
        queries[name] = (task.metadata.type, list(dict.fromkeys(_queried_texts(task))))
    return queries


def _queried_texts(task: Any) -> list[str]:
    kind = task.metadata.type
    if kind in ("Retrieval", "Reranking"):
        return [text for subset in task.dataset.values() for text in subset["test"]["queries"]["text"]]
    columns = QUERIED_COLUMNS.get(kind)
    if columns is None:
        raise ValueError(f"{task.metadata.name}: no queried texts known for task type {kind}")
    splits = [task.dataset["test"]] if "test" in task.dataset else [s["test"] for s in task.dataset.values()]
    texts = []
    for split in splits:
        for column in columns:
            for value in split[column]:
                texts += value if isinstance(value, list) else [value]
    return texts


# --- n-gram check -------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """``text`` normalised for the n-gram check: lowercase words (letters and digits), punctuation dropped."""
    return re.findall(r"[^\W_]+", text.lower())


class NgramIndex:
    """Hashed word n-grams of many texts: each text's ``n``-grams, or the whole text when it is shorter than
    ``n`` but at least ``min_words`` words."""

    def __init__(self, texts: Sequence[str], n: int, min_words: int = MIN_WORDS) -> None:
        if n < 1:
            raise UserError(f"the contamination n-gram length must be at least 1, not {n}")
        self.owners: dict[int, list[int]] = {}  # n-gram hash -> ids of the texts holding it
        self.sizes: list[int] = []  # distinct n-grams per text
        self.lengths = {n}  # window lengths a record is cut into: n and every short text's length
        for number, text in enumerate(texts):
            tokens = words(text)
            if len(tokens) < n:
                grams = {hash(tuple(tokens))} if len(tokens) >= min_words else set()
                if grams:
                    self.lengths.add(len(tokens))
            else:
                grams = _windows(tokens, n)
            self.sizes.append(len(grams))
            for gram in grams:
                self.owners.setdefault(gram, []).append(number)

    def overlaps(self, text: str) -> dict[int, float]:
        """Text id -> the fraction of that text's n-grams found in ``text`` (1.0: wholly contained)."""
        tokens = words(text)
        found: dict[int, int] = {}
        for length in self.lengths:
            for gram in _windows(tokens, length):
                for owner in self.owners.get(gram, ()):
                    found[owner] = found.get(owner, 0) + 1
        return {owner: count / self.sizes[owner] for owner, count in found.items()}


def _windows(tokens: list[str], length: int) -> set[int]:
    return {hash(tuple(tokens[i : i + length])) for i in range(len(tokens) - length + 1)}


# --- embedding check ----------------------------------------------------------------------------------------


def best_matches(queries: np.ndarray, candidates: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query vector, the highest cosine to ``candidates[rows]`` and the position in ``rows`` where it
    is; computed in blocks, so memory stays at BLOCK x BLOCK scores whatever the sizes."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    where = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(rows), BLOCK):
        block = candidates[rows[start : start + BLOCK]]
        for first in range(0, len(queries), BLOCK):
            scores = queries[first : first + BLOCK] @ block.T
            top = scores.argmax(axis=1)
            value = scores[np.arange(len(top)), top]
            better = value > best[first : first + BLOCK]
            best[first : first + BLOCK][better] = value[better]
            where[first : first + BLOCK][better] = top[better] + start
    return best, where


# --- the audit ----------------------------------------------------------------------------------------------


@dataclass
class Match:
    """Why one record is flagged for one task: its best n-gram and embedding matches there."""

    ngram: float = 0.0  # fraction of the matched task text's n-grams in the record (0: not flagged)
    ngram_text: str = ""
    field: str = ""  # the record field that held it: query or positive
    similarity: float | None = None  # cosine of the record's query to its nearest task text
    similar_text: str = ""

    def evidence(self) -> float:
        """What orders the examples: a copy flagged by both checks first."""
        return self.ngram + (self.similarity or 0.0)

    def example(self, record: TrainRecord, threshold: float | None) -> dict[str, Any]:
        by_ngram = self.ngram > 0
        return {
            "record": _shown(record.query),
            "source": record.source,
            "check": "ngram" if by_ngram else "embedding",
            "field": self.field if by_ngram else "query",
            "match": _shown(self.ngram_text if by_ngram else self.similar_text),
            "ngram": round(self.ngram, 4),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "both": by_ngram and _flagged(self.similarity, threshold),
        }


def audit(
    records: Sequence[TrainRecord],
    data_dir: Path,
    *,
    ngram: int = 13,
    min_words: int = MIN_WORDS,
    similarity: float | None = 0.95,
    encoder: str = REFERENCE_ENCODER,
    cache_dir: Path | None = None,
    tasks: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The contamination report of ``records`` against the test texts of the bundled tasks in ``data_dir``.

    Records are counted once per distinct (query, positive). ``similarity`` None skips the embedding check
    (no encoder is loaded). ``cache_dir`` is an embedding cache root, e.g. ``evaluate.cache_dir``, which the
    evaluation of the same encoder shares (None: nothing is cached). The report, JSON-able::

        {"settings": {...}, "records": N, "flagged": {"ngram": a, "embedding": b, "any": c},
         "flagged_queries": [the query of every flagged record],
         "tasks": {task: {"texts": n, "ngram": x, "embedding": y, "flagged": z, "max_similarity": s,
                          "examples": [{"record", "source", "check", "field", "match", "ngram", "similarity",
                                        "both"}, ...]}}}

    ``max_similarity`` is the highest record-to-task cosine: how far the task is from being flagged.
    """
    typed = _typed_queries(data_dir, tasks)
    queries = {task: texts for task, (_, texts) in typed.items()}
    distinct = list({(r.query, r.positive): r for r in reversed(records)}.values())[::-1]
    texts = list(dict.fromkeys(text for task_texts in queries.values() for text in task_texts))
    matches: dict[str, dict[int, Match]] = {task: {} for task in queries}
    _ngram_matches(distinct, NgramIndex(texts, ngram, min_words), texts, queries, matches)
    best_by_task: dict[str, np.ndarray] = {}
    if similarity is not None:
        embedded = {task: texts for task, (kind, texts) in typed.items() if kind in EMBEDDED_TYPES}
        embedded_texts = list(dict.fromkeys(text for task_texts in embedded.values() for text in task_texts))
        embedded_id = {text: number for number, text in enumerate(embedded_texts)}
        rows = {
            task: np.array([embedded_id[t] for t in task_texts], dtype=np.int64)
            for task, task_texts in embedded.items()
        }
        best_by_task = _embedding_matches(distinct, embedded_texts, rows, encoder, cache_dir, similarity, matches)
    report_tasks = {}
    for task, found in matches.items():
        flagged = {r: m for r, m in found.items() if m.ngram > 0 or _flagged(m.similarity, similarity)}
        ranked = sorted(flagged.items(), key=lambda item: (-item[1].evidence(), item[0]))
        best = best_by_task.get(task)
        report_tasks[task] = {
            "texts": len(queries[task]),
            "ngram": sum(m.ngram > 0 for m in flagged.values()),
            "embedding": sum(_flagged(m.similarity, similarity) for m in flagged.values()),
            "flagged": len(flagged),
            "max_similarity": None if best is None or not len(best) else round(float(best.max()), 4),
            "examples": [m.example(distinct[r], similarity) for r, m in ranked[:EXAMPLES]],
        }
    by_ngram = {r for found in matches.values() for r, m in found.items() if m.ngram > 0}
    by_embedding = {r for found in matches.values() for r, m in found.items() if _flagged(m.similarity, similarity)}
    return {
        "settings": {
            "ngram": ngram,
            "min_words": min_words,
            "similarity": similarity,
            "encoder": encoder if similarity is not None else None,
        },
        "records": len(distinct),
        "flagged": {"ngram": len(by_ngram), "embedding": len(by_embedding), "any": len(by_ngram | by_embedding)},
        "flagged_queries": sorted({distinct[r].query for r in by_ngram | by_embedding}),
        "tasks": report_tasks,
    }


def _ngram_matches(
    records: list[TrainRecord],
    index: NgramIndex,
    texts: list[str],
    queries: dict[str, list[str]],
    matches: dict[str, dict[int, Match]],
) -> None:
    """Record every record's best n-gram match per task in ``matches``."""
    tasks_of: dict[str, list[str]] = {}
    for task, task_texts in queries.items():
        for text in task_texts:
            tasks_of.setdefault(text, []).append(task)
    for number, record in enumerate(records):
        for field in ("query", "positive"):
            for owner, overlap in index.overlaps(getattr(record, field)).items():
                for task in tasks_of[texts[owner]]:
                    match = matches[task].setdefault(number, Match())
                    if overlap > match.ngram:
                        match.ngram, match.ngram_text, match.field = overlap, texts[owner], field


def _embedding_matches(
    records: list[TrainRecord],
    texts: list[str],
    task_rows: dict[str, np.ndarray],
    encoder: str,
    cache_dir: Path | None,
    threshold: float,
    matches: dict[str, dict[int, Match]],
) -> dict[str, np.ndarray]:
    """Record every record's nearest task text per task in ``matches`` (all n-gram-flagged records, and the
    others at or above ``threshold``); return each task's best cosine per record."""
    queries = list(dict.fromkeys(record.query for record in records))
    vectors = encode_texts(texts + queries, encoder, cache_dir)
    text_vectors, query_vectors = vectors[: len(texts)], vectors[len(texts) :]
    row_of = {query: number for number, query in enumerate(queries)}
    record_rows = np.array([row_of[record.query] for record in records], dtype=np.int64)
    best_by_task = {}
    for task, rows in task_rows.items():
        best, where = best_matches(query_vectors, text_vectors, rows)
        best, where = best[record_rows], where[record_rows]
        best_by_task[task] = best
        for number in range(len(records)):
            if best[number] >= threshold or number in matches[task]:
                match = matches[task].setdefault(number, Match())
                match.similarity, match.similar_text = float(best[number]), texts[rows[where[number]]]
    return best_by_task


def _flagged(score: float | None, threshold: float | None) -> bool:
    return score is not None and threshold is not None and score >= threshold


def _shown(text: str) -> str:
    return textwrap.shorten(" ".join(text.split()), SHOWN_CHARS, placeholder=" ...")


def check_contamination(report: dict[str, Any], limit: int) -> None:
    """Raise a one-line UserError when some task has more than ``limit`` flagged records (0: any stops).

    The line names the task with the most flagged records, their count and the first one's query."""
    over = sorted((-t["flagged"], name) for name, t in report["tasks"].items() if t["flagged"] > max(limit, 0))
    if not over:
        return
    count, task = -over[0][0], over[0][1]
    first = report["tasks"][task]["examples"][0]
    query = textwrap.shorten(first["record"], 80, placeholder="...")
    raise UserError(
        f"contamination: {count} training record{'s overlap' if count > 1 else ' overlaps'} the {task} test texts "
        f"(limit {limit}), first: {query!r} ({first['check']} match in its {first['field']}); remove them or raise "
        "the limit"
    )
