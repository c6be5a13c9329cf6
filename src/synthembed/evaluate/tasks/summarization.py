"""Summarization: MTEB scores each machine summary by its closest human reference summary and correlates that
with the experts' relevance ratings, article by article; subsampled by articles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mteb
from datasets import Dataset, DatasetDict
from mteb.abstasks.text.summarization import AbsTaskSummarization

from synthembed.errors import UserError
from synthembed.evaluate.data import open_text, sample_rows
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes, mteb_metadata
from synthembed.io import json_objects

# The 12 abstractive systems of SummEval whose outputs are bundled (MTEB also has the extractive M0, M1, M2, M5).
SUMMEVAL_SYSTEMS = ["M8", "M9", "M10", "M11", "M12", "M13", "M14", "M15", "M17", "M20", "M22", "M23"]


class LocalSummarization(InMemoryTask, AbsTaskSummarization):
    pass


@dataclass
class Article:
    """One source article, its human reference summaries, and each system's summary with its mean relevance."""

    text: str
    references: list[str]
    summaries: list[str] = field(default_factory=list)
    relevance: list[float] = field(default_factory=list)


def read_summeval(paths: list[Path]) -> list[Article]:
    """The articles of SummEval's per-system files (one line per article), in the order they first appear."""
    articles: dict[str, Article] = {}
    for path in paths:
        with open_text(path) as handle:
            for number, row in json_objects(handle, path):
                try:
                    ratings = [float(rating["relevance"]) for rating in row["expert_annotations"]]
                    article = articles.setdefault(row["id"], Article(row["text"], list(row["references"])))
                    article.summaries.append(row["decoded"])
                    article.relevance.append(sum(ratings) / len(ratings))
                except (KeyError, TypeError, ValueError, ZeroDivisionError):
                    raise UserError(
                        f"{path}: line {number} lacks id, text, decoded, references or expert relevance ratings"
                    ) from None
    return list(articles.values())


def summeval(folder: Path) -> Builder:
    def build(sizes: SubsetSizes) -> LocalSummarization:
        paths = [folder / f"{system}_outputs_annotations.jsonl.gz" for system in SUMMEVAL_SYSTEMS]
        articles = read_summeval(paths)
        kept = sample_rows(articles, sizes.max_queries, sizes.seed)
        subset = {"n_queries": len(kept)} if len(kept) < len(articles) else None
        split = Dataset.from_dict(
            {
                "text": [article.text for article in kept],
                "human_summaries": [article.references for article in kept],
                "machine_summaries": [article.summaries for article in kept],
                "relevance": [article.relevance for article in kept],
            }
        )
        metadata = mteb_metadata("SummEval", folder, paths)
        task = LocalSummarization.create(metadata, DatasetDict({"test": split}), subset, sizes.seed)
        # MTEB's SummEval keeps its original (averaging) evaluator and rescales relevance by its own range
        reference = mteb.get_task("SummEval")
        task.evaluator, task.min_score, task.max_score = reference.evaluator, reference.min_score, reference.max_score
        return task

    return build


def bundled(data_dir: Path) -> dict[str, Builder]:
    return {"SummEval": summeval(data_dir / "summeval")}
