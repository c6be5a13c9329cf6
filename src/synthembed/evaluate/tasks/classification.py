"""Classification: MTEB trains a logistic regression on the embeddings of the train texts, scores the test ones.

Each bundled task takes its protocol (train examples per label, number of experiments) from MTEB's own task
class, and its train rows stay in the order of MTEB's copy: MTEB's undersampling shuffles row positions with the
seed, so the order decides which train texts every experiment sees, and so the score. ``max_experiments`` keeps
the first experiments of MTEB's sequence (the same ones a full run starts with), so only their train texts are
encoded.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import mteb
from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification

from synthembed.errors import UserError, first_line
from synthembed.evaluate.data import open_text, sample_rows
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes, mteb_metadata


class LocalClassification(InMemoryTask, AbsTaskClassification):
    pass


def read_columns(
    path: Path, columns: Sequence[str], delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL
) -> list[list[str]]:
    """The fields named ``columns`` (in that order) of every row of a delimited file whose header names them."""
    try:
        with open_text(path) as handle:
            rows = [row for row in csv.reader(handle, delimiter=delimiter, quoting=quoting) if row]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {first_line(exc)}") from None
    header = rows[0] if rows else []
    missing = [column for column in columns if column not in header]
    if missing:
        raise UserError(f"{path}: the header {delimiter.join(header)!r} has no column {missing[0]!r}")
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise UserError(f"{path}: row {number} has {len(row)} fields, the header {len(header)}")
    positions = [header.index(column) for column in columns]
    return [[row[position] for position in positions] for row in rows[1:]]


def with_label_ids(examples: list[list[str]], path: Path, labels: Sequence[str]) -> list[tuple[str, int]]:
    """(text, label id) of every (text, label) example, the id being its label's position in ``labels``."""
    ids = {label: index for index, label in enumerate(labels)}
    for number, (_, label) in enumerate(examples, start=1):
        if label not in ids:
            raise UserError(f"{path}: row {number} has label {label!r}, not one of {', '.join(labels)}")
    return [(text, ids[label]) for text, label in examples]


def as_dataset(rows: list[tuple[str, int]]) -> Dataset:
    return Dataset.from_dict({"text": [text for text, _ in rows], "label": [label for _, label in rows]})


def classification_task(
    name: str,
    folder: Path,
    files: tuple[str, str],
    columns: tuple[str, str],
    delimiter: str = ",",
    labels: Sequence[str] | None = None,
    hf_subset: str | None = None,
) -> Builder:
    """MTEB task ``name`` over the (train, test) ``files`` of ``folder``, read by their (text, label) ``columns``.

    ``labels`` lists the label names in the order of MTEB's label ids (default: sorted, as most copies number
    them); ``hf_subset`` names the one subset of a multilingual task that the files hold: only its test split
    is evaluated.
    """

    def build(sizes: SubsetSizes) -> LocalClassification:
        paths = [folder / file for file in files]
        train, test = (read_columns(path, columns, delimiter) for path in paths)
        names = labels or sorted({label for _, label in train})
        train, test = (
            with_label_ids(examples, path, names) for examples, path in zip((train, test), paths, strict=True)
        )
        kept = sample_rows(test, sizes.max_queries, sizes.seed)
        reference = mteb.get_task(name)  # MTEB's own undersampling of the train split
        experiments = min(reference.n_experiments, sizes.max_experiments or reference.n_experiments)
        subset = None
        if len(kept) < len(test) or experiments < reference.n_experiments:
            subset = {"n_queries": len(kept), "n_experiments": experiments}
        metadata = mteb_metadata(name, folder, paths)
        scope: dict[str, object] = {"eval_splits": ["test"]}  # the bundled split (MTEB also lists validation)
        if hf_subset:
            scope["eval_langs"] = {hf_subset: metadata.eval_langs[hf_subset]}
        dataset = DatasetDict({"train": as_dataset(train), "test": as_dataset(kept)})
        task = LocalClassification.create(
            metadata.model_copy(update=scope), {hf_subset: dataset} if hf_subset else dataset, subset, sizes.seed
        )
        task.samples_per_label, task.n_experiments = reference.samples_per_label, experiments
        return task

    return build


def bundled(data_dir: Path) -> dict[str, Builder]:
    return {
        "Banking77Classification": classification_task(
            "Banking77Classification",
            data_dir / "banking77",
            ("train.csv.gz", "test.csv"),
            ("text", "category"),
        ),
        "EmotionClassification": classification_task(
            "EmotionClassification",
            data_dir / "emotion",
            ("train.txt.gz", "test.txt"),
            ("text", "label_name"),
            delimiter=";",
            labels=("sadness", "joy", "love", "anger", "fear", "surprise"),  # the ids of mteb/emotion
        ),
        "AmazonCounterfactualClassification": classification_task(
            "AmazonCounterfactualClassification",
            data_dir / "amazon_counterfactual",
            ("EN_train.tsv.gz", "EN_test.tsv"),
            ("sentence", "is_counterfactual"),
            delimiter="\t",  # with CSV quoting: MTEB's copy has the quoted sentences unquoted
            hf_subset="en",
        ),
        "TweetSentimentExtractionClassification": classification_task(
            "TweetSentimentExtractionClassification",
            data_dir / "tweet_sentiment_extraction",
            ("train.csv.gz", "test.csv"),
            ("text", "sentiment"),
        ),
    }
