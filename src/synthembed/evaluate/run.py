"""The evaluate stage: score one model on local MTEB tasks; its metrics are the scores per task."""

from __future__ import annotations

from importlib import resources
from numbers import Real
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthembed.encoder import Embedder
from synthembed.evaluate.model import EmbedderEncoder
from synthembed.evaluate.tasks import SubsetSizes, build_task
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


def scores_of(result: Any) -> dict[str, float]:
    """MTEB's test scores of one task, ``main_score`` first, numbers only."""
    split = result.scores["test"][0]
    metrics = {"main_score": float(split["main_score"])}
    metrics.update(
        {key: float(value) for key, value in split.items() if isinstance(value, Real) and key != "main_score"}
    )
    return metrics


def run_evaluate(config: Params, model: str, tasks: list[str] | None = None) -> StageResult:
    """Score ``model`` on ``tasks`` (bundled names or BEIR folders; default ``evaluate.tasks``).

    The table holds one ``task,model,main_score`` row per task: what ``dvc plots`` compares across models.

    MTEB's own result files go under ``evaluate.results_dir``. A task that was subsampled
    (``evaluate.max_queries`` / ``max_documents``) records the evaluated sizes under ``subset``: such a score
    is not comparable to MTEB's published numbers. Every task records the ``precision`` it was encoded in
    (``evaluate.precision``, fp32 by default).
    """
    import mteb

    sizes = SubsetSizes(config.evaluate.max_queries, config.evaluate.max_documents, config.seed)
    built = [build_task(task, data_dir(config), sizes) for task in tasks or config.evaluate.tasks]
    embedder = Embedder.load(model, config.model.model_copy(update={"dtype": config.evaluate.precision}))
    encoder = EmbedderEncoder(embedder, model_name(model), config.evaluate.instructions)
    cache = mteb.ResultCache(cache_path=config.evaluate.results_dir)
    metrics: dict[str, dict[str, Any]] = {}
    progress = tqdm(built, desc="evaluate", unit="task")
    for task in progress:
        progress.set_postfix_str(task.metadata.name)
        result = mteb.evaluate(encoder, tasks=[task], cache=cache, overwrite_strategy="always", show_progress_bar=False)
        name = task.metadata.name
        metrics[name] = scores_of(result.task_results[0])
        if task.subset is not None:
            metrics[name]["subset"] = task.subset
        metrics[name]["precision"] = embedder.precision
        progress.write(f"{name}: {task.metadata.main_score} = {metrics[name]['main_score']:.4f}")
    rows = [(task, model_name(model), round(scores["main_score"], 5)) for task, scores in metrics.items()]
    summary = ", ".join(f"{name} {scores['main_score']:.4f}" for name, scores in metrics.items())
    return StageResult(metrics, f"{model}: {summary}", table=(["task", "model", "main_score"], rows))
