"""MTEB tasks over local files: the bundled copies in ``data/eval`` and any BEIR folder a user points to.

Bundled tasks reuse MTEB's own metadata (name, main score, the E5 task instruction), so results carry MTEB's
task names and metric names; only ``dataset`` changes to point at the local copy and its content hash. The
data is read here and handed to MTEB already in memory, so nothing is ever fetched from the Hugging Face Hub.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from synthembed.errors import UserError
from synthembed.evaluate.data import (
    RetrievalData,
    beir_files,
    data_revision,
    read_beir,
    read_csv,
    sample_rows,
    subsample_retrieval,
)

# Queries of a user's BEIR folder get this instruction unless the folder holds an ``instruction.txt``.
DEFAULT_RETRIEVAL_INSTRUCTION = "Given a query, retrieve relevant documents that answer the query"


@dataclass(frozen=True)
class SubsetSizes:
    """Subsampling for small compute budgets (None keeps the whole test split, as MTEB does)."""

    max_queries: int | None = None
    max_documents: int | None = None
    seed: int = 42


class _InMemory:
    """A task whose data is already loaded: ``load_data`` only hands it to MTEB."""

    def __init__(self, dataset: Any, subset: dict[str, int] | None, **kwargs: Any) -> None:
        self._data = dataset
        self.subset = subset  # sizes actually evaluated when the split was subsampled, else None
        super().__init__(**kwargs)

    @classmethod
    def create(cls, metadata: TaskMetadata, dataset: Any, subset: dict[str, int] | None, seed: int):
        """An instance of a subclass carrying ``metadata`` (MTEB reads it from the class after unloading)."""
        return type(cls.__name__, (cls,), {"metadata": metadata})(dataset, subset, seed=seed)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = self._data
        self.data_loaded = True


class LocalRetrieval(_InMemory, AbsTaskRetrieval):
    pass


class LocalSTS(_InMemory, AbsTaskSTS):
    min_score = 0
    max_score = 5


class LocalClassification(_InMemory, AbsTaskClassification):
    pass


LocalTask = LocalRetrieval | LocalSTS | LocalClassification


def _mteb_metadata(name: str, folder: Path, files: list[Path]) -> TaskMetadata:
    import mteb

    metadata = mteb.get_task(name).metadata
    return metadata.model_copy(
        update={
            "dataset": {"path": f"local/{folder.name}", "revision": data_revision(*files)},
            "superseded_by": None,
        }
    )


def _retrieval_task(metadata: TaskMetadata, data: RetrievalData, sizes: SubsetSizes) -> LocalRetrieval:
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


def _beir_task(name: str, folder: Path) -> Callable[[SubsetSizes], LocalTask]:
    def build(sizes: SubsetSizes) -> LocalTask:
        files = list(beir_files(folder))
        return _retrieval_task(_mteb_metadata(name, folder, files), read_beir(folder), sizes)

    return build


def _sts_task(name: str, folder: Path, files: list[str], reader: Callable[[Path], list[tuple[str, str, float]]]):
    def build(sizes: SubsetSizes) -> LocalTask:
        paths = [folder / f for f in files]
        pairs = [pair for path in paths for pair in reader(path)]
        kept = sample_rows(pairs, sizes.max_queries, sizes.seed)
        subset = {"n_queries": len(kept)} if len(kept) < len(pairs) else None
        s1, s2, score = zip(*kept, strict=True)
        dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": score})})
        return LocalSTS.create(_mteb_metadata(name, folder, paths), dataset, subset, sizes.seed)

    return build


def _stsb_pairs(path: Path) -> list[tuple[str, str, float]]:
    return [(row[0], row[1], float(row[2])) for row in read_csv(path, header=False)]


def _sick_pairs(path: Path) -> list[tuple[str, str, float]]:
    return [(row[1], row[2], float(row[3])) for row in read_csv(path, delimiter="\t")]


def _banking77(folder: Path) -> Callable[[SubsetSizes], LocalTask]:
    def build(sizes: SubsetSizes) -> LocalTask:
        paths = [folder / "train.csv.gz", folder / "test.csv"]
        train, test = (read_csv(path) for path in paths)
        labels = {label: index for index, label in enumerate(sorted({row[1] for row in train}))}
        kept = sample_rows(test, sizes.max_queries, sizes.seed)
        subset = {"n_queries": len(kept)} if len(kept) < len(test) else None

        def split(rows: list[list[str]]) -> Dataset:
            return Dataset.from_dict({"text": [r[0] for r in rows], "label": [labels[r[1]] for r in rows]})

        dataset = DatasetDict({"train": split(train), "test": split(kept)})
        metadata = _mteb_metadata("Banking77Classification", folder, paths)
        return LocalClassification.create(metadata, dataset, subset, sizes.seed)

    return build


def bundled_tasks(data_dir: Path) -> dict[str, Callable[[SubsetSizes], LocalTask]]:
    """MTEB task name -> builder over its copy in ``data_dir`` (see each folder's SOURCE.md)."""
    return {
        "SciFact": _beir_task("SciFact", data_dir / "scifact"),
        "NFCorpus": _beir_task("NFCorpus", data_dir / "nfcorpus"),
        "STSBenchmark": _sts_task("STSBenchmark", data_dir / "stsbenchmark", ["stsb-en-test.csv"], _stsb_pairs),
        "SICK-R": _sts_task(
            "SICK-R",
            data_dir / "sickr",
            ["SICK_train.txt.gz", "SICK_trial.txt.gz", "SICK_test_annotated.txt.gz"],
            _sick_pairs,
        ),
        "Banking77Classification": _banking77(data_dir / "banking77"),
    }


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
    return _retrieval_task(metadata, read_beir(folder), sizes)


def build_task(name_or_path: str, data_dir: Path, sizes: SubsetSizes) -> LocalTask:
    """A bundled task by its MTEB name, else a BEIR folder (anything on disk or with a path separator)."""
    bundled = bundled_tasks(data_dir)
    if name_or_path in bundled:
        return bundled[name_or_path](sizes)
    path = Path(name_or_path).expanduser()
    if path.exists() or "/" in name_or_path or name_or_path.startswith("."):
        return user_beir_task(path, sizes)
    raise UserError(
        f"unknown task {name_or_path!r}; known tasks: {', '.join(bundled)}, "
        "or the path to a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/test.tsv)"
    )
