"""Reranking: rank each question's own candidates by similarity to it. MTEB 2 scores this as retrieval restricted
to every query's ``top_ranked`` candidates, with MTEB's reranking main score (MAP over the ranked candidates)."""

from __future__ import annotations

import csv
from pathlib import Path

from datasets import Dataset
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from synthembed.errors import UserError
from synthembed.evaluate.data import data_revision, sample_rows
from synthembed.evaluate.tasks.base import Builder, SubsetSizes
from synthembed.evaluate.tasks.classification import read_columns
from synthembed.evaluate.tasks.retrieval import LocalRetrieval

WIKIQA_COLUMNS = ("QuestionID", "Question", "SentenceID", "Sentence", "Label")


def wikiqa_metadata(folder: Path, path: Path) -> TaskMetadata:
    """WikiQA is not an MTEB task: its own metadata, typed and scored as MTEB's reranking tasks are."""
    return TaskMetadata(
        name="WikiQA",
        description=(
            "WikiQA test split: rank the sentences of a question's Wikipedia summary paragraph by whether they "
            "answer it. Evaluated on the questions with at least one correct sentence, as in the WikiQA paper."
        ),
        reference="https://aclanthology.org/D15-1237/",
        dataset={"path": f"local/{folder.name}", "revision": data_revision(path)},
        type="Reranking",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="map_at_1000",
        date=("2013-01-01", "2015-12-31"),
        domains=["Encyclopaedic", "Written"],
        task_subtypes=["Question answering"],
        license="not specified",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation=r"""
@inproceedings{yang-etal-2015-wikiqa,
  author = {Yang, Yi and Yih, Wen-tau and Meek, Christopher},
  booktitle = {Proceedings of the 2015 Conference on Empirical Methods in Natural Language Processing},
  pages = {2013--2018},
  title = {{W}iki{QA}: A Challenge Dataset for Open-Domain Question Answering},
  year = {2015},
}
""",
    )


def read_wikiqa(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """Questions (id -> text), candidate sentences (id -> text) and every question's judged candidates."""
    questions: dict[str, str] = {}
    sentences: dict[str, str] = {}
    candidates: dict[str, dict[str, int]] = {}
    rows = read_columns(path, WIKIQA_COLUMNS, "\t", csv.QUOTE_NONE)  # sentences keep their quote marks
    for number, (qid, question, sid, sentence, label) in enumerate(rows, start=1):
        if label not in ("0", "1"):
            raise UserError(f"{path}: row {number} has Label {label!r}, not 0 or 1")
        questions[qid], sentences[sid] = question, sentence
        candidates.setdefault(qid, {})[sid] = int(label)
    return questions, sentences, candidates


def wikiqa(folder: Path) -> Builder:
    def build(sizes: SubsetSizes) -> LocalRetrieval:
        path = folder / "WikiQA-test.tsv.gz"
        questions, sentences, candidates = read_wikiqa(path)
        answered = [qid for qid, judged in candidates.items() if any(judged.values())]
        kept = sample_rows(answered, sizes.max_queries, sizes.seed)
        doc_ids = list(dict.fromkeys(sid for qid in kept for sid in candidates[qid]))
        subset = {"n_queries": len(kept), "n_documents": len(doc_ids)} if len(kept) < len(answered) else None
        split = RetrievalSplitData(
            corpus=Dataset.from_dict(
                {"id": doc_ids, "title": [""] * len(doc_ids), "text": [sentences[sid] for sid in doc_ids]}
            ),
            queries=Dataset.from_dict({"id": kept, "text": [questions[qid] for qid in kept]}),
            relevant_docs={qid: candidates[qid] for qid in kept},
            top_ranked={qid: list(candidates[qid]) for qid in kept},
        )
        metadata = wikiqa_metadata(folder, path)
        return LocalRetrieval.create(metadata, {"default": {"test": split}}, subset, sizes.seed)

    return build


def bundled(data_dir: Path) -> dict[str, Builder]:
    return {"WikiQA": wikiqa(data_dir / "wikiqa")}
