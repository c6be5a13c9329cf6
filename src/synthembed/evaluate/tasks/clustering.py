"""Clustering: MTEB k-means-clusters the embeddings of every set of titles and scores the clusters against the
titles' labels (V-measure, averaged over the sets).

RedditClustering and StackExchangeClustering are MTEB's legacy (per-set) clustering tasks, so they run on MTEB's
legacy clustering class, as MTEB's own do; their sets here are a smaller redraw from the same source pools (see
each folder's SOURCE.md), so the scores are not MTEB's.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy

from synthembed.errors import UserError, first_line
from synthembed.evaluate.data import open_text, sample_rows
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes, mteb_metadata
from synthembed.io import json_objects

SETS_FILE = "test.jsonl.gz"
REDRAW = (
    " Not MTEB's 25 sets: {sets} smaller sets ({titles} titles; 10-50 labels per set, 10-50 titles per label) "
    "redrawn with seed 42 from the TWEAC test pools; see data/eval/{folder}/SOURCE.md."
)

Titles = list[tuple[str, str]]  # (title, label) of one set


class LocalClustering(InMemoryTask, AbsTaskClusteringLegacy):
    pass


def read_sets(path: Path) -> list[Titles]:
    """Every set of a JSONL file of ``{"sentences": [...], "labels": [...]}`` lines, MTEB's clustering format."""
    sets = []
    try:
        with open_text(path) as handle:
            for number, row in json_objects(handle, path):
                sentences, labels = row.get("sentences"), row.get("labels")
                if not (_strings(sentences) and _strings(labels) and len(sentences) == len(labels)):
                    raise UserError(f"{path}: line {number} needs string lists 'sentences' and 'labels' of one length")
                sets.append(list(zip(sentences, labels, strict=True)))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {first_line(exc)}") from None
    if not sets:
        raise UserError(f"{path} holds no clustering sets")
    return sets


def _strings(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)


def clustering_task(name: str, folder: Path) -> Builder:
    def build(sizes: SubsetSizes) -> LocalClustering:
        path = folder / SETS_FILE
        sets = read_sets(path)
        kept = [sample_rows(titles, sizes.max_queries, sizes.seed) for titles in sets]
        n_titles, n_kept = sum(map(len, sets)), sum(map(len, kept))
        subset = {"n_queries": n_kept} if n_kept < n_titles else None
        columns = {
            "sentences": [[title for title, _ in titles] for titles in kept],
            "labels": [[label for _, label in titles] for titles in kept],
        }
        metadata = mteb_metadata(name, folder, [path])
        redraw = REDRAW.format(sets=len(sets), titles=f"{n_titles:,}", folder=folder.name)
        metadata = metadata.model_copy(update={"description": metadata.description + redraw})
        return LocalClustering.create(metadata, DatasetDict({"test": Dataset.from_dict(columns)}), subset, sizes.seed)

    return build


def bundled(data_dir: Path) -> dict[str, Builder]:
    return {
        "RedditClustering": clustering_task("RedditClustering", data_dir / "reddit_clustering"),
        "StackExchangeClustering": clustering_task("StackExchangeClustering", data_dir / "stackexchange_clustering"),
    }
