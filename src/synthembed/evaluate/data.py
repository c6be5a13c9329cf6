"""Reading evaluation data from local files (BEIR folders, STS pairs, labelled texts) and subsampling it.

Everything here is plain Python over the files in ``data/eval`` or a user's BEIR folder; MTEB only sees the
result. A malformed file is a :class:`UserError` naming the file (and line), never a traceback.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

from synthembed.errors import UserError
from synthembed.io import json_objects

BEIR_LAYOUT = "a BEIR folder holds corpus.jsonl[.gz], queries.jsonl[.gz] and qrels/test.tsv"


@dataclass
class RetrievalData:
    """One retrieval test split: documents (id -> title, text), queries (id -> text) and graded judgements."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def open_text(path: Path) -> io.TextIOBase:
    """Open ``path`` as UTF-8 text, transparently gunzipping ``*.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def data_revision(*paths: Path) -> str:
    """A short content hash of the files a task reads (MTEB records it as the dataset revision)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


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


def sample_rows(rows: list, limit: int | None, seed: int) -> list:
    """At most ``limit`` rows, a seeded random subset in the original order."""
    if limit is None or limit >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def read_csv(path: Path, delimiter: str = ",", header: bool = True) -> list[list[str]]:
    """Rows of a CSV/TSV file (``.gz`` allowed), without its header line."""
    with open_text(path) as handle:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        rows = [row for row in csv.reader(handle, delimiter=delimiter, quoting=quoting) if row]
    return rows[1:] if header else rows


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
