"""A user's corpus: the documents ``search`` indexes, ``prepare`` mines hard negatives from and ``generate``
grounds examples in. One reader for all three, so a file that searches also mines and grounds.

Accepted: plain text (one document per line), JSONL with ``text`` (and optional ``id``/``_id``, ``title``), or a
BEIR folder (its ``corpus.jsonl``); any file may be gzipped (``.gz``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthembed.encoder.inputs import check_texts
from synthembed.errors import UserError
from synthembed.io import read_records

BEIR_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""

    @property
    def content(self) -> str:
        """What gets embedded: the BEIR convention of title, a space, then the text."""
        return f"{self.title} {self.text}".strip()


def corpus_file(path: str | Path) -> Path:
    """The file that holds the documents: ``path`` itself, or a BEIR folder's corpus file."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in BEIR_CORPUS_FILES:
        if (path / name).is_file():
            return path / name
    raise UserError(f"{path} is a folder without corpus.jsonl[.gz]: pass a corpus file or a BEIR folder")


def read_corpus(path: str | Path) -> list[Document]:
    """Documents from plain lines, JSONL with ``text`` and optional ``id``, or BEIR (``_id``, ``title``, ``text``).

    A document without an id is named by its line number counted from 0, as docs/serving.md promises: a blank
    line is skipped but keeps its number, so the ids of the lines after it do not shift.
    """
    path = corpus_file(path)
    documents = []
    for number, row in read_records(path):
        ident = row.get("_id", row.get("id", number - 1))
        title = row.get("title") or ""
        if not isinstance(title, str):
            raise UserError(f"{path}: document {ident} has a title that is not a string")
        documents.append(Document(str(ident), row["text"], title))
    ids = [d.id for d in documents]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: document id {duplicate!r} occurs more than once")
    check_texts([d.content for d in documents], name=f"{path}: document")
    return documents
