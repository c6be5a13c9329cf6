"""The MLflow model registry: ``models:/`` and ``runs:/`` references, and registering the champion.

``synthembed register`` logs the trained embedder with the sentence_transformers flavor, registers it, and
moves the ``champion`` alias only when its score (a version tag) is strictly higher than the champion's and
both were scored on the same evaluation data (the full task, or the same subset sizes) in the same precision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, NamedTuple

from synthembed.encoder.references import cache_dir
from synthembed.errors import UserError
from synthembed.params import Params
from synthembed.pipeline.stage import StageResult
from synthembed.tracking.runs import global_tracking_uri, open_store, tracking_uri

MODEL_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
RUN_REFERENCE = re.compile(r"^runs:/(?P<run_id>[0-9a-f]+)/(?P<path>.+)$")
MLFLOW_MODEL_DATA = "model.sentence_transformer"  # where the sentence_transformers flavor keeps the model


def download_model(reference: str, uri: str | None = None) -> Path:
    """The local model directory for ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/ID/PATH``.

    Artifacts are immutable, so each model version (or run path) is downloaded once into the synthembed cache.
    """
    import mlflow

    uri = uri or tracking_uri()
    client = open_store(uri, create=False)
    if match := MODEL_REFERENCE.match(reference):
        version = _model_version(client, match["name"], match["alias"], match["version"])
        source_uri, key = f"models:/{version.name}/{version.version}", f"{version.source}|{version.run_id}"
        inside = "."  # a model version downloads as the model's folder itself
    elif match := RUN_REFERENCE.match(reference):
        _run(client, match["run_id"])
        source_uri, key, inside = reference, reference, match["path"]  # kept under its artifact path
    else:
        raise UserError(
            f"unknown MLflow reference {reference!r}; use models:/<name>@<alias>, models:/<name>/<version> "
            "or runs:/<run_id>/<path>"
        )
    target = cache_dir() / "mlflow" / hashlib.sha256(key.encode()).hexdigest()[:20]
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
        try:
            try:
                mlflow.artifacts.download_artifacts(
                    source_uri, dst_path=str(staging), tracking_uri=uri, registry_uri=uri
                )
            except (mlflow.exceptions.MlflowException, OSError) as exc:
                first_line = str(getattr(exc, "message", exc)).splitlines()[0]
                raise UserError(f"cannot download {reference}: {first_line}") from None
            with contextlib.suppress(OSError):  # another process may have finished the same download first
                staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _model_folder(target / inside, reference)


def _model_version(client, name: str, alias: str | None, number: str | None):
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        names = ", ".join(m.name for m in client.search_registered_models()) or "none"
        raise UserError(f"no registered model {name!r} in the MLflow registry (registered: {names})") from None
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException:
        registered = client.get_registered_model(name)
        if alias:
            known = ", ".join(sorted(registered.aliases)) or "none"
            raise UserError(f"registered model {name!r} has no alias {alias!r} (aliases: {known})") from None
        latest = max((int(v.version) for v in client.search_model_versions(f"name='{name}'")), default=0)
        raise UserError(f"registered model {name!r} has no version {number} (latest: {latest})") from None


def _run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run {run_id!r} in {client.tracking_uri}") from None


def _model_folder(directory: Path, reference: str) -> Path:
    """The SentenceTransformer (or plain checkpoint) folder inside a downloaded MLflow model or artifact."""
    for candidate in (directory / MLFLOW_MODEL_DATA, directory):
        if (candidate / "modules.json").exists() or (candidate / "config.json").exists():
            return candidate
    raise UserError(f"{reference} holds no SentenceTransformer model (no modules.json or config.json)")


def metric_value(scores: Mapping[str, Any], metric: str, source: str) -> float:
    """The number at dotted path ``metric`` (e.g. ``SciFact.ndcg_at_10``) in an evaluation result."""
    node: Any = scores
    for depth, part in enumerate(metric.split(".")):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(metric.split(".")[:depth]) or "the top level"
            known = ", ".join(map(str, node)) if isinstance(node, Mapping) else "nothing (not a mapping)"
            raise UserError(f"register.metric {metric!r} not found in {source}: {where} has {known}")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise UserError(f"register.metric {metric!r} in {source} is {node!r}, not a number")
    return float(node)


def scored_on_of(scores: Mapping[str, Any], metric: str) -> str:
    """What the score was measured on: the evaluation's ``scored_on`` (the task set with each task's evaluated
    sizes, the seed and the precision); for an evaluation that records none, the metric's task data (``full``
    or its subset sizes) and precision.

    Scores of different task sets, subsets, seeds or precisions do not compare, so the champion moves only
    between versions scored alike; a score without a recorded precision compares with none that has one.
    """
    if isinstance(scores.get("scored_on"), Mapping):
        return json.dumps(scores["scored_on"], sort_keys=True)
    task = scores.get(metric.split(".")[0])
    task = task if isinstance(task, Mapping) else {}
    on = {"data": task.get("subset") or "full", "precision": task.get("precision", "unrecorded")}
    return json.dumps(on, sort_keys=True)


def _pip_requirements() -> list[str]:
    """Pinned without local version labels (``+cpu``); given explicitly so MLflow infers nothing."""
    return [
        f"{name}=={package_version(name).split('+')[0]}" for name in ("sentence-transformers", "transformers", "torch")
    ]


@dataclass(frozen=True)
class Champion:
    version: int
    score: float | None
    scored_on: str


class Verdict(NamedTuple):
    promoted: bool
    reason: str


def promotion(score: float, scored_on: str, champion: Champion | None, alias: str, metric: str) -> Verdict:
    """Whether a new version with ``score`` takes ``alias`` from ``champion``: only with a strictly higher
    score on the same evaluation data and precision; a champion without a score gives way."""
    if champion is None:
        return Verdict(True, f"no {alias} yet")
    if champion.score is None:
        return Verdict(True, f"{alias} version {champion.version} has no {metric} score")
    if champion.scored_on != scored_on:
        return Verdict(
            False,
            f"not comparable: {alias} version {champion.version} was scored on {champion.scored_on}, "
            f"this version on {scored_on}; move the alias by hand once both are scored alike",
        )
    promoted = score > champion.score
    return Verdict(promoted, f"{score!r} {'>' if promoted else '<='} {champion.score!r}")


def read_scores(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found; run `synthembed evaluate` first") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg})") from None


def current_champion(client, name: str, alias: str, metric: str, scored_on: str) -> Champion | None:
    """The version holding ``alias``, with the score and evaluation data its tags record (a version without a
    ``scored_on`` tag, registered before it existed, is taken as scored like this one)."""
    import mlflow

    try:
        version = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    score = version.tags.get(f"score.{metric}")
    on = version.tags.get(f"scored_on.{metric}", scored_on)
    return Champion(int(version.version), float(score) if score is not None else None, on)


def log_model(model_dir: Path, name: str) -> str:
    """Log the folder with the sentence_transformers flavor into the active run and register it; its version."""
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    info = mlflow.sentence_transformers.log_model(
        SentenceTransformer(str(model_dir), device="cpu"),
        name="model",
        pip_requirements=_pip_requirements(),
        registered_model_name=name,
    )
    return str(info.registered_model_version)


def run_register(config: Params, model: str, scores: str) -> StageResult:
    """Log and register ``model``; the champion alias moves to it only if it scores higher (:func:`promotion`).

    The registry is the store of ``config``'s tracking URI (:func:`tracking_uri`), the one the stage's run logs to.
    """
    settings = config.register
    model_dir, scores_path = Path(model), Path(scores)
    if not (model_dir / "modules.json").exists():
        raise UserError(f"{model_dir} is not a SentenceTransformer folder (run `synthembed train`)")
    evaluation = read_scores(scores_path)
    score = metric_value(evaluation, settings.metric, str(scores_path))
    scored_on = scored_on_of(evaluation, settings.metric)
    uri = tracking_uri(config)
    client = open_store(uri, create=True)
    champion = current_champion(client, settings.model_name, settings.alias, settings.metric, scored_on)
    with global_tracking_uri(uri):  # the flavor logs into the active run and registers through the fluent API
        version = log_model(model_dir, settings.model_name)
    client.set_model_version_tag(settings.model_name, version, f"score.{settings.metric}", repr(score))
    client.set_model_version_tag(settings.model_name, version, f"scored_on.{settings.metric}", scored_on)
    verdict = promotion(score, scored_on, champion, settings.alias, settings.metric)
    if verdict.promoted:
        client.set_registered_model_alias(settings.model_name, settings.alias, version)
    result = {
        "model_name": settings.model_name,
        "version": int(version),
        "metric": settings.metric,
        "score": score,
        "scored_on": scored_on,
        "champion_version": champion.version if champion else None,
        "champion_score": champion.score if champion else None,
        "promoted": verdict.promoted,
        "reason": verdict.reason,
        "champion": f"models:/{settings.model_name}@{settings.alias}",
        "reference": f"models:/{settings.model_name}/{version}",
    }
    line = "promoted to" if verdict.promoted else "kept below"
    return StageResult(
        result, f"{result['reference']} {line} {result['champion']} ({settings.metric}: {verdict.reason})"
    )
