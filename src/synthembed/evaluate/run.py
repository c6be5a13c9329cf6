"""The evaluate stage: score one model on local MTEB tasks and write ``metrics/eval.json``."""

from __future__ import annotations

import json
from numbers import Real
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from synthembed.encoder import Embedder
from synthembed.encoder.references import resolve_model
from synthembed.evaluate.model import EmbedderEncoder
from synthembed.evaluate.tasks import Limits, build_task
from synthembed.io import write_json
from synthembed.params import Params

BUNDLED_DATA = Path(__file__).resolve().parents[3] / "data" / "eval"


def data_dir(config: Params) -> Path:
    """Where the bundled task data lives: ``evaluate.data_dir``, else the repository's ``data/eval``."""
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


def load_embedder(config: Params, reference: str) -> Embedder:
    """Load ``reference``; a saved SentenceTransformer keeps the ``max_seq_length`` it was saved with.

    ``model.max_seq_length`` shapes fresh backbones; a published model (all-MiniLM-L6-v2: 256) or a trained
    one is scored as it was made, which is what makes our numbers match MTEB's table.
    """
    model_dir = resolve_model(reference)
    params = config.model
    saved = model_dir / "sentence_bert_config.json"
    if saved.is_file():
        own = json.loads(saved.read_text()).get("max_seq_length")
        if isinstance(own, int):
            params = params.model_copy(update={"max_seq_length": own})
    return Embedder.load(str(model_dir), params)


def scores_of(result: Any) -> dict[str, float]:
    """MTEB's test scores of one task, ``main_score`` first, numbers only."""
    split = result.scores["test"][0]
    metrics = {"main_score": float(split["main_score"])}
    metrics.update(
        {key: float(value) for key, value in split.items() if isinstance(value, Real) and key != "main_score"}
    )
    return metrics


def run_evaluate(config: Params, model: str, tasks: list[str], output: Path) -> dict[str, dict[str, Any]]:
    """Score ``model`` on ``tasks`` (bundled names or BEIR folders) and write ``output`` atomically.

    MTEB's own result files go under ``evaluate.results_dir``. A task that was subsampled
    (``evaluate.max_queries`` / ``max_documents``) records the evaluated sizes under ``subset``: such a score
    is not comparable to MTEB's published numbers.
    """
    import mteb

    limits = Limits(config.evaluate.max_queries, config.evaluate.max_documents, config.seed)
    built = [build_task(task, data_dir(config), limits) for task in tasks]  # fail on bad tasks before loading
    encoder = EmbedderEncoder(load_embedder(config, model), model_name(model), config.evaluate.instructions)
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
        progress.write(f"{name}: {task.metadata.main_score} = {metrics[name]['main_score']:.4f}")
    write_json(output, metrics)
    return metrics
