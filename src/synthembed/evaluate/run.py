"""The evaluate stage: score one model on local MTEB tasks; its metrics are the scores per task."""

from __future__ import annotations

import time
from importlib import resources
from numbers import Real
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthembed.encoder import Embedder
from synthembed.evaluate.cache import EmbeddingCache
from synthembed.evaluate.model import EmbedderEncoder
from synthembed.evaluate.tasks import SubsetSizes, build_tasks
from synthembed.params import Params
from synthembed.pipeline.stage import StageResult

# The repository's data/eval (what DVC tracks), linked into the package so an installed wheel carries it.
BUNDLED_DATA = Path(str(resources.files("synthembed") / "eval_data"))


def data_dir(config: Params) -> Path:
    """Where the bundled task data lives: ``evaluate.data_dir``, else the copy shipped with the package."""
    return Path(config.evaluate.data_dir) if config.evaluate.data_dir else BUNDLED_DATA


def model_name(reference: str) -> str:
    """The name results are filed under: a local folder's last part, else the reference without its scheme."""
    reference = reference.strip().rstrip("/")
    path = Path(reference).expanduser()
    if path.exists():
        return path.resolve().name
    for scheme in ("builtin:", "models:/", "runs:/"):
        reference = reference.removeprefix(scheme)
    return reference


def scores_of(result: Any, split: str) -> dict[str, float]:
    """MTEB's scores of one task on ``split``, ``main_score`` first, numbers only."""
    scores = result.scores[split][0]
    metrics = {"main_score": float(scores["main_score"])}
    metrics.update(
        {key: float(value) for key, value in scores.items() if isinstance(value, Real) and key != "main_score"}
    )
    return metrics


def averages(tasks: dict[str, dict[str, Any]], categories: dict[str, str]) -> dict[str, float]:
    """The paper's layout: the mean main score per task category, and ``overall``, the mean over all tasks."""
    by_category: dict[str, list[float]] = {}
    for name, scores in tasks.items():
        by_category.setdefault(categories[name], []).append(scores["main_score"])
    means = {category: sum(values) / len(values) for category, values in sorted(by_category.items())}
    means["overall"] = sum(scores["main_score"] for scores in tasks.values()) / len(tasks)
    return {key: round(value, 5) for key, value in means.items()}


def report(model: str, tasks: dict[str, dict[str, Any]], categories: dict[str, str], average: dict[str, float]) -> str:
    """A markdown table of the scores, task by task under their category, then the averages."""
    lines = [f"| {model} | category | main score | seconds |", "|---|---|---|---|"]
    for name, scores in sorted(tasks.items(), key=lambda item: (categories[item[0]], item[0])):
        lines.append(f"| {name} | {categories[name]} | {scores['main_score']:.4f} | {scores['seconds']:.0f} |")
    lines += [f"| **average** | {key} | {value:.4f} | |" for key, value in average.items()]
    return "\n".join(lines)


def run_evaluate(config: Params, model: str, tasks: list[str] | None = None) -> StageResult:
    """Score ``model`` on ``tasks`` (bundled names or BEIR folders; default ``evaluate.tasks``).

    The metrics hold each task's scores, ``average`` (per category and overall, the paper's layout) and
    ``scored_on`` (the task set with each task's evaluated sizes, the seed and the precision: two evaluations
    compare only when these agree). The table holds a ``task,model,main_score`` row per task and per average:
    what ``dvc plots`` compares across models. MTEB's own result files go under ``evaluate.results_dir``. A task
    that was subsampled (``evaluate.max_queries`` / ``max_documents``) records the evaluated sizes under
    ``subset``: such a score is not comparable to MTEB's published numbers. Every task records the
    ``precision`` it was encoded in (``evaluate.precision``, fp32 by default) and its wall time. Vectors are
    kept in ``evaluate.cache_dir`` (None: no cache), so a text is encoded once per model and precision.
    """
    import mteb

    sizes = SubsetSizes(config.evaluate.max_queries, config.evaluate.max_documents, config.seed)
    built = build_tasks(tasks or config.evaluate.tasks, data_dir(config), sizes)
    embedder = Embedder.load(model, config.model.model_copy(update={"dtype": config.evaluate.precision}))
    cache = None
    if config.evaluate.cache_dir is not None:
        cache = EmbeddingCache.for_model(Path(config.evaluate.cache_dir), embedder.fingerprint(), embedder.precision)
    encoder = EmbedderEncoder(embedder, model_name(model), config.evaluate.instructions, cache)
    results = mteb.ResultCache(cache_path=config.evaluate.results_dir)
    scores: dict[str, dict[str, Any]] = {}
    categories: dict[str, str] = {}
    progress = tqdm(built, desc="evaluate", unit="task")
    for task in progress:
        name = task.metadata.name
        progress.set_postfix_str(name)
        started = time.perf_counter()
        result = mteb.evaluate(
            encoder, tasks=[task], cache=results, overwrite_strategy="always", show_progress_bar=False
        )
        scores[name] = scores_of(result.task_results[0], task.metadata.eval_splits[0])
        if getattr(task, "subset", None) is not None:  # tasks fetched by mteb run in full
            scores[name]["subset"] = task.subset
        scores[name]["precision"] = embedder.precision
        scores[name]["seconds"] = round(time.perf_counter() - started, 1)
        categories[name] = task.metadata.type
        progress.write(f"{name}: {task.metadata.main_score} = {scores[name]['main_score']:.4f}")
    average = averages(scores, categories)
    scored_on = {
        "tasks": {name: task_scores.get("subset", "full") for name, task_scores in sorted(scores.items())},
        "seed": config.seed,
        "precision": embedder.precision,
    }
    label = model_name(model)
    rows = [(name, label, round(task_scores["main_score"], 5)) for name, task_scores in scores.items()]
    rows += [(f"average: {key}", label, value) for key, value in average.items()]
    metrics = {**scores, "average": average, "scored_on": scored_on}
    table = (["task", "model", "main_score"], rows)
    summary = f"{label}: overall {average['overall']:.4f} over {len(scores)} task(s)"
    if cache is not None:
        summary += f"; {cache.encoded:,} texts encoded, {cache.reused:,} read from {cache.directory}"
    return StageResult(metrics, summary, table=table, report=report(label, scores, categories, average))
