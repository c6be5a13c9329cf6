"""MTEB tasks over local files: the bundled copies in ``data/eval`` and any BEIR folder a user points to.

One module per task type holds its reader and builder; :func:`bundled_tasks` is the one table of bundled tasks.
Bundled tasks reuse MTEB's own metadata (name, main score, the E5 task instruction), so results carry MTEB's
task names and metric names; only ``dataset`` changes to point at the local copy and its content hash. The
data is read here and handed to MTEB already in memory, so nothing is ever fetched from the Hugging Face Hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthembed.errors import UserError
from synthembed.evaluate.tasks import (
    classification,
    clustering,
    pair_classification,
    reranking,
    retrieval,
    sts,
    suites,
    summarization,
)
from synthembed.evaluate.tasks.base import Builder, InMemoryTask, SubsetSizes
from synthembed.evaluate.tasks.retrieval import user_beir_task
from synthembed.runtime import hub_offline

TASK_TYPES = (retrieval, sts, classification, pair_classification, reranking, clustering, summarization)

__all__ = ["InMemoryTask", "SubsetSizes", "build_task", "build_tasks", "bundled_tasks"]


def bundled_tasks(data_dir: Path) -> dict[str, Builder]:
    """MTEB task name -> builder over its copy in ``data_dir`` (see each folder's SOURCE.md)."""
    return {name: build for task_type in TASK_TYPES for name, build in task_type.bundled(data_dir).items()}


def build_tasks(names: list[str], data_dir: Path, sizes: SubsetSizes) -> list[Any]:
    """The tasks ``names`` mean, in order: bundled tasks by their MTEB name, suites (``suite:cpu``, with their own
    sizes), BEIR folders (anything on disk or with a path separator), then any MTEB task or benchmark (e.g.
    ``MTEB(eng, v2)``) through mteb's registry. A benchmark's tasks use the bundled copy where there is one; the
    others are fetched by mteb, in full, which needs the model hub: with ``HF_HUB_OFFLINE`` set, such a task is one
    clear error."""
    bundled = bundled_tasks(data_dir)
    tasks: list[Any] = []
    for name in names:
        suite = suites.expand(name, list(bundled), sizes)
        if suite is not None:
            tasks += [bundled[task](task_sizes) for task, task_sizes in suite]
        elif name in bundled:
            tasks.append(bundled[name](sizes))
        elif Path(name).expanduser().exists() or "/" in name or name.startswith("."):
            tasks.append(user_beir_task(Path(name).expanduser(), sizes))
        else:
            tasks += [bundled[task.metadata.name](sizes) if task.metadata.name in bundled else _online(task, bundled)
                      for task in _mteb_tasks(name, bundled)]  # fmt: skip
    return tasks


def build_task(name_or_path: str, data_dir: Path, sizes: SubsetSizes) -> Any:
    """One task by name or folder (see :func:`build_tasks`)."""
    (task,) = build_tasks([name_or_path], data_dir, sizes)
    return task


def _mteb_tasks(name: str, bundled: dict[str, Builder]) -> list[Any]:
    import mteb

    for lookup in (lambda: [mteb.get_task(name)], lambda: list(mteb.get_benchmark(name).tasks)):
        try:
            return lookup()
        except KeyError:
            continue
    raise UserError(
        f"unknown task {name!r}; {_known(bundled)}; or an MTEB task or benchmark name, or the path to a BEIR "
        "folder (corpus.jsonl[.gz], queries.jsonl, qrels/test.tsv)"
    )


def _online(task: Any, bundled: dict[str, Builder]) -> Any:
    if hub_offline():
        raise UserError(
            f"{task.metadata.name} has no bundled copy and HF_HUB_OFFLINE is set, so mteb cannot fetch it; "
            f"{_known(bundled)}"
        )
    return task


def _known(bundled: dict[str, Builder]) -> str:
    """What a task name may be offline, for the errors that reject one."""
    return f"bundled tasks: {', '.join(bundled)}; suites: {', '.join(suites.names(list(bundled)))}"
