"""What every bundled task shares: MTEB's own metadata pointed at the local copy, data handed over in memory,
and the subsample sizes that small compute budgets ask for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mteb.abstasks.task_metadata import TaskMetadata

from synthembed.evaluate.data import data_revision


@dataclass(frozen=True)
class SubsetSizes:
    """Subsampling for small compute budgets (None keeps the whole test split, as MTEB does).

    ``max_queries`` caps a task's test items (queries, pairs, texts, titles per set, articles), ``max_documents``
    a retrieval corpus, ``max_experiments`` the undersampling experiments a classification score averages.
    """

    max_queries: int | None = None
    max_documents: int | None = None
    max_experiments: int | None = None
    seed: int = 42


class InMemoryTask:
    """A task whose data is already loaded: ``load_data`` only hands it to MTEB (nothing is fetched)."""

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


Builder = Callable[[SubsetSizes], InMemoryTask]


def mteb_metadata(name: str, folder: Path, files: list[Path]) -> TaskMetadata:
    """MTEB's metadata of task ``name`` (main score, E5 prompt, ...), its dataset pointed at the local files."""
    import mteb

    metadata = mteb.get_task(name).metadata
    return metadata.model_copy(
        update={
            "dataset": {"path": f"local/{folder.name}", "revision": data_revision(*files)},
            "superseded_by": None,
        }
    )
