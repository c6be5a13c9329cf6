"""Pair classification: sentence pairs labelled paraphrase (1) or not (0), subsampled by pairs; MTEB ranks the
pairs by the similarity of their embeddings and reports the best average precision over similarity functions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetDict
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.task_metadata import TaskMetadata

from synthembed.errors import UserError
from synthembed.evaluate.data import data_revision, open_text, read_csv, sample_rows
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes, mteb_metadata

LabelledPair = tuple[str, str, int]
TWITTER_URL_LAYOUT = "'sentence1<TAB>sentence2<TAB>(n,6)<TAB>url'"
MSRP_LAYOUT = "'quality (0 or 1)<TAB>#1 ID<TAB>#2 ID<TAB>#1 string<TAB>#2 string'"


class LocalPairClassification(InMemoryTask, AbsTaskPairClassification):
    pass


def pair_task(
    folder: Path,
    file: str,
    reader: Callable[[Path], list[LabelledPair]],
    metadata: Callable[[Path], TaskMetadata],
) -> Builder:
    def build(sizes: SubsetSizes) -> LocalPairClassification:
        path = folder / file
        pairs = reader(path)
        kept = sample_rows(pairs, sizes.max_queries, sizes.seed)
        subset = {"n_queries": len(kept)} if len(kept) < len(pairs) else None
        s1, s2, labels = zip(*kept, strict=True)
        split = Dataset.from_dict({"sentence1": s1, "sentence2": s2, "labels": labels})
        return LocalPairClassification.create(metadata(path), DatasetDict({"test": split}), subset, sizes.seed)

    return build


def twitter_url_pairs(path: Path) -> list[LabelledPair]:
    """The authors' labels: n of 6 annotators saw a paraphrase; n <= 2 is 0, n >= 4 is 1 and n = 3 is dropped.
    A few lines carry an empty field before the url."""
    pairs = []
    with open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            votes = re.fullmatch(r"\(([0-6]),6\)", fields[2]) if len(fields) in (4, 5) else None
            if votes is None:
                raise UserError(f"{path}: line {number} is not {TWITTER_URL_LAYOUT}")
            if (paraphrase_votes := int(votes[1])) != 3:
                pairs.append((fields[0], fields[1], int(paraphrase_votes >= 4)))
    return pairs


def msrp_pairs(path: Path) -> list[LabelledPair]:
    pairs = []
    for number, row in enumerate(read_csv(path, delimiter="\t"), start=1):
        if len(row) != 5 or row[0] not in ("0", "1"):
            raise UserError(f"{path}: row {number} is not {MSRP_LAYOUT}")
        pairs.append((row[3], row[4], int(row[0])))
    return pairs


def msrp_metadata(path: Path) -> TaskMetadata:
    """MSRP is no MTEB task: its metadata follows MTEB's pair classification tasks (main score ``max_ap``)."""
    return TaskMetadata(
        name="MSRP",
        description="Microsoft Research Paraphrase Corpus, test split: news sentence pairs judged paraphrase or not.",
        reference="https://aclanthology.org/I05-5002",
        dataset={"path": f"local/{path.parent.name}", "revision": data_revision(path)},
        type="PairClassification",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="max_ap",
        date=None,
        domains=["News", "Written"],
        task_subtypes=[],
        license=None,  # the MSR Shared Source licence (non-commercial), which MTEB's list lacks: see LICENCE.html
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation=r"""
@inproceedings{dolan-brockett-2005-automatically,
  author = {Dolan, William B. and Brockett, Chris},
  booktitle = {Proceedings of the Third International Workshop on Paraphrasing ({IWP}2005)},
  title = {Automatically Constructing a Corpus of Sentential Paraphrases},
  url = {https://aclanthology.org/I05-5002},
  year = {2005},
}
""",
    )


def bundled(data_dir: Path) -> dict[str, Builder]:
    twitter = data_dir / "twitter_url_corpus"
    return {
        "TwitterURLCorpus": pair_task(
            twitter,
            "Twitter_URL_Corpus_test.txt.gz",
            twitter_url_pairs,
            lambda path: mteb_metadata("TwitterURLCorpus", twitter, [path]),
        ),
        "MSRP": pair_task(data_dir / "msrp", "msr-para-test.tsv.gz", msrp_pairs, msrp_metadata),
    }
