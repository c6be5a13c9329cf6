"""Retrieval: BEIR folders (bundled SciFact and NFCorpus, or a user's own), read, subsampled, handed to MTEB."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from synthembed.errors import UserError
from synthembed.evaluate.data import data_revision, open_text
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes, mteb_metadata
from synthembed.io import json_objects

BEIR_LAYOUT = "a BEIR folder holds corpus.jsonl[.gz], queries.jsonl[.gz] and qrels/test.tsv"
# Queries of a user's BEIR folder get this instruction unless the folder holds an ``instruction.txt``.
DEFAULT_RETRIEVAL_INSTRUCTION = "Given a query, retrieve relevant documents that answer the query"


class LocalRetrieval(InMemoryTask, AbsTaskRetrieval):
    pass


@dataclass
class RetrievalData:
    """One retrieval test split: documents (id -> title, text), queries (id -> text) and graded judgements."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def beir_files(folder: Path) -> tuple[Path, Path, Path]:
    """The corpus, queries and test-qrels files of a BEIR folder (either plain or gzipped JSONL)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a directory; {BEIR_LAYOUT}")

    def find(stem: str) -> Path:
        for name in (stem, f"{stem}.gz"):
            if (folder / name).is_file():
                return folder / name
        raise UserError(f"{folder} has no {stem}[.gz]; {BEIR_LAYOUT}")

    qrels = folder / "qrels" / "test.tsv"
    corpus, queries = find("corpus.jsonl"), find("queries.jsonl")
    if not qrels.is_file():
        raise UserError(f"{folder} has no qrels/test.tsv; {BEIR_LAYOUT}")
    return corpus, queries, qrels


def read_beir(folder: Path) -> RetrievalData:
    """Load a BEIR folder, keeping only the queries that have test judgements."""
    corpus_file, queries_file, qrels_file = beir_files(folder)
    qrels = _read_qrels(qrels_file)
    corpus = {
        row_id: (_str_field(row, "title", path, number, ""), _str_field(row, "text", path, number))
        for row_id, row, path, number in _jsonl_rows(corpus_file)
    }
    queries = {
        row_id: _str_field(row, "text", path, number)
        for row_id, row, path, number in _jsonl_rows(queries_file)
        if row_id in qrels
    }
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise UserError(f"{qrels_file}: query {missing[0]!r} is judged but not in {queries_file.name}")
    unknown = sorted({doc for docs in qrels.values() for doc in docs} - set(corpus))
    if unknown:
        raise UserError(f"{qrels_file}: document {unknown[0]!r} is judged but not in {corpus_file.name}")
    return RetrievalData(corpus, queries, qrels)


def subsample_retrieval(
    data: RetrievalData, max_queries: int | None, max_documents: int | None, seed: int
) -> RetrievalData:
    """Keep ``max_queries`` seeded-random queries, every document they judge, and random distractors up to
    ``max_documents`` (judged documents are never dropped, so the corpus may exceed the limit)."""
    rng = random.Random(seed)
    query_ids = sorted(data.queries)
    if max_queries is not None and max_queries < len(query_ids):
        query_ids = sorted(rng.sample(query_ids, max_queries))
    qrels = {qid: data.qrels[qid] for qid in query_ids}
    doc_ids = sorted(data.corpus)
    if max_documents is not None and max_documents < len(doc_ids):
        judged = {doc for docs in qrels.values() for doc in docs}
        others = [doc for doc in doc_ids if doc not in judged]
        extra = rng.sample(others, max(0, min(len(others), max_documents - len(judged))))
        doc_ids = sorted(judged | set(extra))
    return RetrievalData(
        corpus={doc: data.corpus[doc] for doc in doc_ids},
        queries={qid: data.queries[qid] for qid in query_ids},
        qrels=qrels,
    )


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if number == 1 and fields[0] == "query-id" or not line.strip():
                continue
            if len(fields) != 3 or not fields[2].lstrip("-").isdigit():
                raise UserError(f"{path}: line {number} is not 'query-id<TAB>corpus-id<TAB>score'")
            qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    if not qrels:
        raise UserError(f"{path} holds no judgements")
    return qrels


def _jsonl_rows(path: Path):
    """(``_id``, row, path, line number) for every line of a BEIR JSONL file."""
    try:
        with open_text(path) as handle:
            for number, row in json_objects(handle, path):
                if "_id" not in row:
                    raise UserError(f"{path}: line {number} has no '_id' field")
                yield str(row["_id"]), row, path, number
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _str_field(row: dict, field: str, path: Path, number: int, default: str | None = None) -> str:
    value = row.get(field, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise UserError(f"{path}: line {number} has no string field {field!r}")
    return value


def retrieval_task(metadata: TaskMetadata, data: RetrievalData, sizes: SubsetSizes) -> LocalRetrieval:
    full = data
    data = subsample_retrieval(data, sizes.max_queries, sizes.max_documents, sizes.seed)
    subset = None
    if (len(data.queries), len(data.corpus)) != (len(full.queries), len(full.corpus)):
        subset = {"n_queries": len(data.queries), "n_documents": len(data.corpus)}
    corpus_ids = list(data.corpus)
    split = RetrievalSplitData(
        corpus=Dataset.from_dict(
            {
                "id": corpus_ids,
                "title": [data.corpus[i][0] for i in corpus_ids],
                "text": [data.corpus[i][1] for i in corpus_ids],
            }
        ),
        queries=Dataset.from_dict({"id": list(data.queries), "text": list(data.queries.values())}),
        relevant_docs=data.qrels,
        top_ranked=None,
    )
    return LocalRetrieval.create(metadata, {"default": {"test": split}}, subset, sizes.seed)


def beir_task(name: str, folder: Path) -> Builder:
    def build(sizes: SubsetSizes) -> LocalRetrieval:
        files = list(beir_files(folder))
        return retrieval_task(mteb_metadata(name, folder, files), read_beir(folder), sizes)

    return build


def user_beir_task(folder: Path, sizes: SubsetSizes) -> LocalRetrieval:
    """A retrieval task named after ``folder``; ``instruction.txt`` in it overrides the query instruction."""
    files = list(beir_files(folder))
    instruction_file = folder / "instruction.txt"
    instruction = (
        instruction_file.read_text(encoding="utf-8-sig").strip() if instruction_file.is_file() else ""
    ) or DEFAULT_RETRIEVAL_INSTRUCTION
    metadata = TaskMetadata(
        name=folder.resolve().name,
        description=f"Local BEIR-format retrieval data from {folder}",
        reference=None,
        dataset={"path": str(folder), "revision": data_revision(*files)},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation=None,
        prompt={"query": instruction},
    )
    return retrieval_task(metadata, read_beir(folder), sizes)


def bundled(data_dir: Path) -> dict[str, Builder]:
    return {
        "SciFact": beir_task("SciFact", data_dir / "scifact"),
        "NFCorpus": beir_task("NFCorpus", data_dir / "nfcorpus"),
    }
