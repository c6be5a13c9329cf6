"""The evaluate stage: score one model on local MTEB tasks and write ``metrics/eval.json``."""

from __future__ import annotations

from importlib import resources
from numbers import Real
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthembed.encoder import Embedder
from synthembed.errors import UserError
from synthembed.evaluate.model import EmbedderEncoder
from synthembed.evaluate.tasks import Limits, build_task
from synthembed.io import write_csv, write_json
from synthembed.params import Params

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


def scores_table_path(output: Path) -> Path:
    """The per-task CSV written beside ``output`` (``metrics/eval.json`` -> ``metrics/eval.csv``).

    An ``output`` that is itself that CSV is refused: the two files must never overwrite each other.
    """
    table = output.with_suffix(".csv")
    if table == output:
        raise UserError(f"evaluation output {output} would be overwritten by its own per-task table; name a .json file")
    return table


def write_scores_table(path: Path, model: str, metrics: dict[str, dict[str, Any]]) -> None:
    """One ``task,model,main_score`` row per task: what ``dvc plots`` compares across models."""
    rows = [(task, model, round(scores["main_score"], 5)) for task, scores in metrics.items()]
    write_csv(path, ["task", "model", "main_score"], rows)


def run_evaluate(config: Params, model: str, tasks: list[str], output: Path) -> dict[str, dict[str, Any]]:
    """Score ``model`` on ``tasks`` (bundled names or BEIR folders); write ``output`` and its per-task CSV.

    MTEB's own result files go under ``evaluate.results_dir``. A task that was subsampled
    (``evaluate.max_queries`` / ``max_documents``) records the evaluated sizes under ``subset``: such a score
    is not comparable to MTEB's published numbers. Every task records the ``precision`` it was encoded in
    (``evaluate.precision``, fp32 by default).
    """
    import mteb

    limits = Limits(config.evaluate.max_queries, config.evaluate.max_documents, config.seed)
    built = [build_task(task, data_dir(config), limits) for task in tasks]  # fail on bad tasks before loading
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
    write_json(output, metrics)
    write_scores_table(scores_table_path(output), model_name(model), metrics)
    return metrics
