"""MTEB tasks over local files: the bundled copies in ``data/eval`` and any BEIR folder a user points to.

One module per task type holds its reader and builder; :func:`bundled_tasks` is the one table of bundled tasks.
Bundled tasks reuse MTEB's own metadata (name, main score, the E5 task instruction), so results carry MTEB's
task names and metric names; only ``dataset`` changes to point at the local copy and its content hash. The
data is read here and handed to MTEB already in memory, so nothing is ever fetched from the Hugging Face Hub.
"""

from __future__ import annotations

from pathlib import Path

from synthembed.errors import UserError
from synthembed.evaluate.tasks import (
    classification,
    clustering,
    pair_classification,
    reranking,
    retrieval,
    sts,
    summarization,
)
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes
from synthembed.evaluate.tasks.retrieval import user_beir_task

TASK_TYPES = (retrieval, sts, classification, pair_classification, reranking, clustering, summarization)

__all__ = ["InMemoryTask", "SubsetSizes", "build_task", "bundled_tasks"]


def bundled_tasks(data_dir: Path) -> dict[str, Builder]:
    """MTEB task name -> builder over its copy in ``data_dir`` (see each folder's SOURCE.md)."""
    return {name: build for task_type in TASK_TYPES for name, build in task_type.bundled(data_dir).items()}


def build_task(name_or_path: str, data_dir: Path, sizes: SubsetSizes) -> InMemoryTask:
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
