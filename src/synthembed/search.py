"""Semantic search over a corpus file with an index kept on disk.

The corpus is embedded once; its vectors are saved beside a manifest naming what they were computed from
(the corpus bytes, the model files, the model settings). The next search reuses them while all of that is
unchanged and re-embeds otherwise, so a stale index is never searched. Search is exact (a matrix product in
numpy) unless the optional FAISS backend is asked for, which keeps an HNSW graph for very large corpora.
Documents are embedded as plain text, queries by the model's own query convention
(:mod:`synthembed.encoder.convention`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synthembed.corpus import corpus_file, read_corpus
from synthembed.encoder.inputs import check_texts
from synthembed.errors import UserError
from synthembed.io import atomic_write, check_writable, write_json
from synthembed.params import Params

Backend = Literal["numpy", "faiss"]
INDEX_FORMAT = 1
EMBEDDINGS_FILE = "embeddings.npy"
MANIFEST_FILE = "manifest.json"
FAISS_FILE = "faiss.index"
INDEX_FILES = (EMBEDDINGS_FILE, MANIFEST_FILE, FAISS_FILE)


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    id: str
    text: str


@dataclass(frozen=True)
class SearchResults:
    queries: list[str]
    hits: list[list[Hit]]
    index_dir: Path
    reused: bool  # False when the corpus was (re-)embedded by this call
    documents: int
    unsaved: str | None = None  # why the vectors this call embedded could not be saved (a read-only folder)

    def to_json(self) -> list[dict]:
        return [
            {"query": q, "hits": [asdict(h) for h in hits]} for q, hits in zip(self.queries, self.hits, strict=True)
        ]


def default_index_dir(corpus: str | Path) -> Path:
    corpus = Path(corpus)
    return corpus.with_name(corpus.name + ".index")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model_dir: Path) -> str:
    """A hash of every model file's path, size and modification time.

    Cheap even for gigabyte weights, and it changes whenever a file is rewritten (a retrained or re-registered
    model); a false alarm only costs one re-embedding.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(model_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def index_key(corpus: Path, model: str, model_dir: Path, config: Params) -> dict:
    """Everything the document vectors depend on; any difference means the saved index is stale."""
    return {
        "format": INDEX_FORMAT,
        "corpus_sha256": file_sha256(corpus),
        "model": model,
        "model_fingerprint": model_fingerprint(model_dir),
        "model_settings": config.model.model_dump(exclude={"backbone", "batch_size"}),
    }


def check_index_dir(index_dir: Path) -> None:
    """Refuse a folder that holds anything but our own index files: saving an index deletes and rewrites
    ``manifest.json`` and ``faiss.index``, which in a web app's folder (``--index .``) are someone else's."""
    if index_dir.exists() and not index_dir.is_dir():
        raise UserError(f"index folder {index_dir} is a file, not a folder")
    if not index_dir.is_dir():
        return
    foreign = sorted(entry.name for entry in index_dir.iterdir() if not _is_index_file(entry.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(
            f"index folder {index_dir} holds files that are not part of a search index ({shown}); "
            "pass --index a new or empty folder"
        )


def _is_index_file(name: str) -> bool:
    """One of the index files, or a temporary that an atomic write of one of them left behind."""
    return name in INDEX_FILES or any(name.startswith(f".{file}.") and name.endswith(".tmp") for file in INDEX_FILES)


def load_index(index_dir: Path, key: dict, documents: int) -> np.ndarray | None:
    """The saved vectors when the manifest matches ``key`` and the corpus size, else None (rebuild), also
    when the manifest or the vectors are unreadable or malformed."""
    try:
        manifest = json.loads((index_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("documents") != documents:
            return None
        if any(manifest.get(name) != value for name, value in key.items()):
            return None
        embeddings = np.load(index_dir / EMBEDDINGS_FILE)
    except (OSError, ValueError, EOFError):
        return None
    return embeddings if embeddings.shape == (documents, manifest.get("dimension")) else None


def save_index(index_dir: Path, key: dict, embeddings: np.ndarray, corpus: Path) -> None:
    """Vectors first, manifest last: an interrupted save leaves an index that is simply rebuilt next time."""
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / MANIFEST_FILE).unlink(missing_ok=True)
    (index_dir / FAISS_FILE).unlink(missing_ok=True)
    with atomic_write(index_dir / EMBEDDINGS_FILE, "wb") as handle:
        np.save(handle, embeddings.astype(np.float32))
    manifest = {
        **key,
        "corpus": str(corpus),
        "documents": int(embeddings.shape[0]),
        "dimension": int(embeddings.shape[1]),
    }
    write_json(index_dir / MANIFEST_FILE, manifest)


def top_k(
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    backend: Backend = "numpy",
    index_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row numbers of the ``k`` nearest documents per query, best first (cosine: unit vectors)."""
    k = min(k, embeddings.shape[0])
    if backend == "faiss":
        index = _faiss_index(embeddings, index_dir)
        scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, rows
    scores = queries @ embeddings.T
    rows = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, rows, axis=1), axis=1, kind="stable")
    rows = np.take_along_axis(rows, order, axis=1)
    return np.take_along_axis(scores, rows, axis=1), rows


def _faiss_index(embeddings: np.ndarray, index_dir: Path | None):
    """An HNSW inner-product graph, built once per index and saved beside the vectors."""
    try:
        import faiss
    except ImportError:
        raise UserError(
            "--backend faiss needs the optional FAISS package: pip install 'synthembed[faiss]' (or faiss-cpu)"
        ) from None
    path = index_dir / FAISS_FILE if index_dir is not None else None
    if path is not None and path.exists():
        return faiss.read_index(str(path))
    index = faiss.IndexHNSWFlat(embeddings.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 128
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    if path is not None:
        with atomic_write(path, "wb") as handle:
            handle.write(faiss.serialize_index(index).tobytes())
    return index


def run_search(
    config: Params,
    queries: Sequence[str],
    corpus: str | Path,
    model: str,
    *,
    instruction: str | None = None,
    k: int = 10,
    index_dir: str | Path | None = None,
    backend: Backend = "numpy",
) -> SearchResults:
    """Embed ``corpus`` unless a matching index exists, then return the top ``k`` documents for each query.

    Queries are written by the model's own convention: ``instruction`` (None: the model's default instruction)
    in its template for a model that takes instructions, plain text for one that takes none.
    """
    from synthembed.encoder import Embedder
    from synthembed.encoder.references import resolve_model

    if not queries:
        raise UserError("no query to search for: pass one or more QUERY arguments")
    check_texts(queries, name="QUERIES")
    if k < 1:
        raise UserError("--top-k must be at least 1")
    corpus = corpus_file(corpus)
    documents = read_corpus(corpus)
    index_dir = Path(index_dir) if index_dir is not None else default_index_dir(corpus)
    check_index_dir(index_dir)
    try:  # a corpus in a read-only folder is still searched, only its index is not kept
        check_writable(index_dir / EMBEDDINGS_FILE)
    except UserError as exc:
        unsaved, save_dir = str(exc), None
    else:
        unsaved, save_dir = None, index_dir
    model_dir = resolve_model(model)
    embedder = Embedder.load(str(model_dir), config.model)
    key = index_key(corpus, model, model_dir, config)
    embeddings = load_index(index_dir, key, len(documents))
    reused = embeddings is not None
    if embeddings is None:
        embeddings = embedder.encode_documents([d.content for d in documents])
        if save_dir is not None:
            save_index(save_dir, key, embeddings, corpus)
    vectors = embedder.encode_queries(queries, instruction=instruction, show_progress=False)
    scores, rows = top_k(embeddings, vectors, k, backend, save_dir)
    hits = [
        [
            Hit(rank, float(score), documents[row].id, documents[row].content)
            for rank, (score, row) in enumerate(zip(query_scores, query_rows, strict=True), start=1)
            if row >= 0
        ]
        for query_scores, query_rows in zip(scores, rows, strict=True)
    ]
    return SearchResults(list(queries), hits, index_dir, reused, len(documents), None if reused else unsaved)


def format_results(results: SearchResults, width: int = 80) -> str:
    """A readable table per query: rank, score, id and the start of the text."""
    blocks = []
    for query, hits in zip(results.queries, results.hits, strict=True):
        id_width = max([len("id"), *(len(h.id) for h in hits)])
        lines = [f"query: {query}", f"{'rank':>4}  {'score':>6}  {'id':<{id_width}}  text"]
        for hit in hits:
            text = " ".join(hit.text.split())
            room = max(width - id_width - 16, 20)
            text = text if len(text) <= room else text[: room - 1] + "…"
            lines.append(f"{hit.rank:>4}  {hit.score:6.3f}  {hit.id:<{id_width}}  {text}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
