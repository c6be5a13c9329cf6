"""MLflow runs for pipeline stages: one run per stage with its params, metrics, artifacts and provenance tags.

Every stage run is tagged with the git commit, the DVC stage, a hash of its input files and a pipeline id that
the runs of one pipeline execution share (``SYNTHEMBED_PIPELINE_ID`` if set, else a hash of the git commit and
the validated params), so the MLflow UI can filter or group them together. The tracking URI is
``MLFLOW_TRACKING_URI`` when set (MLflow's own convention), else ``mlflow.tracking_uri`` from params; clients
are made for it explicitly, and MLflow's global URI (which its fluent API logs to) is set only for the length
of a stage's run.
No secret reaches MLflow: any value of a secret-named environment variable is masked in params and tags,
and an artifact containing one is not logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synthembed.errors import UserError
from synthembed.params import MlflowParams, Params
from synthembed.secrets import redact, secret_values


def tracking_uri(config: Params | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``mlflow.tracking_uri`` from params (or its default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (config.mlflow if config else MlflowParams()).tracking_uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def open_store(uri: str, create: bool):
    """A client for ``uri``; a missing sqlite store is created only when ``create`` (never by a lookup)."""
    import mlflow

    db = _sqlite_path(uri)
    if db is not None:
        if not db.exists() and not create:
            raise UserError(f"no MLflow store at {db}; register a model first (`synthembed register`)")
        db.parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(uri)


# ---------------------------------------------------------------- secrets and flattening


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flattened numeric leaves (booleans as 0/1) under MLflow-safe keys; text, lists and None skipped."""
    numbers = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, (int, float)):
            numbers[re.sub(r"[^\w\-. /:]", "_", key)] = float(value)
    return numbers


def section_params(config: Params, sections: Iterable[str]) -> dict[str, str]:
    """The named params sections (or ``section.key`` values) flattened to ``section.key`` strings."""
    flat: dict[str, Any] = {}
    for section in sections:
        value: Any = config
        for part in section.split("."):
            if not isinstance(value, BaseModel) or part not in type(value).model_fields:
                raise ValueError(f"unknown params section {section!r}")
            value = getattr(value, part)
        if isinstance(value, BaseModel):
            flat.update(flatten(value.model_dump(mode="json"), f"{section}."))
        else:
            flat[section] = value
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flat.items()}


# ---------------------------------------------------------------- provenance tags


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def hash_inputs(paths: Iterable[str | Path]) -> str:
    """SHA-256 over the names and contents of the given files and directories (missing ones named)."""
    digest = hashlib.sha256()
    for root in sorted(str(p) for p in paths):
        path = Path(root)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(f"{file.as_posix()}\0".encode())
            if file.is_file():
                with file.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
            else:
                digest.update(b"<missing>")
    return digest.hexdigest()


def pipeline_id(config: Params, commit: str | None) -> str:
    """Shared by every stage of one pipeline execution: same commit and same params give the same id."""
    if os.environ.get("SYNTHEMBED_PIPELINE_ID"):
        return os.environ["SYNTHEMBED_PIPELINE_ID"]
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(f"{commit or 'no-git'}\n{canonical}".encode()).hexdigest()[:12]


# ---------------------------------------------------------------- stage runs


def _contains_any(file: Path, secrets: list[str]) -> bool:
    """Whether ``file`` holds any of ``secrets`` (memory-mapped, so large files are not read into memory)."""
    if not secrets or file.stat().st_size == 0:
        return False
    with file.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as content:
        return any(content.find(secret.encode()) != -1 for secret in secrets)


class StageRun:
    """The MLflow run of one stage; every value passes the secret filter before it is logged."""

    def __init__(self, run_id: str, secrets: list[str]) -> None:
        self.run_id = run_id
        self._secrets = secrets

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> dict[str, float]:
        """Log the numeric leaves of a (possibly nested) metrics dict; returns what was logged."""
        import mlflow

        numbers = numeric_metrics(metrics)
        if numbers:
            mlflow.log_metrics(numbers, step=step, run_id=self.run_id)
        return numbers

    def log_text(self, text: str, name: str) -> None:
        """Keep ``text`` (secret values masked) as the artifact ``name``."""
        import mlflow

        mlflow.log_text(redact(text, self._secrets), name, run_id=self.run_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> bool:
        """Upload a file or directory; one holding a secret value is refused with a warning (False)."""
        import mlflow

        path = Path(path)
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for file in files:
            if _contains_any(file, self._secrets):
                print(f"warning: {file} contains a secret value; not logged to MLflow", file=sys.stderr)
                return False
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path or path.name, run_id=self.run_id)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path, run_id=self.run_id)
        return True


def _ensure_experiment(client, name: str, uri: str) -> str:
    """The experiment's id; a new one on a sqlite store keeps artifacts in ``mlruns/`` beside the database."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    db = _sqlite_path(uri)
    location = (db.resolve().parent / "mlruns" / re.sub(r"[^\w.-]", "_", name)).as_uri() if db else None
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for the ``with`` block, then put back as it was.

    Its fluent API (the active run, a model logged and registered into it) logs to that URI, and
    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` for subprocesses: both are restored.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous, variable = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None: MLflow's default again (and the variable unset)
        if variable is not None:
            os.environ["MLFLOW_TRACKING_URI"] = variable


@contextlib.contextmanager
def stage_run(
    config: Params, stage: str, sections: Iterable[str] = (), inputs: Iterable[str | Path] = ()
) -> Iterator[StageRun]:
    """One MLflow run around a stage: its params sections, provenance tags; failed if the stage raises."""
    import mlflow

    uri = tracking_uri(config)
    client = open_store(uri, create=True)
    experiment_id = _ensure_experiment(client, config.mlflow.experiment, uri)
    secrets = secret_values()
    commit = git_commit()
    tags = {
        "synthembed.stage": stage,
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "synthembed.pipeline_id": pipeline_id(config, commit),
        "synthembed.inputs_hash": hash_inputs(inputs),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    flat = section_params(config, sections)
    # The run is ended (finished or failed) before the global URI is put back.
    with global_tracking_uri(uri), mlflow.start_run(experiment_id=experiment_id, run_name=stage) as active:
        mlflow.set_tags({key: redact(value, secrets) for key, value in tags.items()})
        if flat:
            mlflow.log_params({key: redact(value, secrets) for key, value in flat.items()})
        yield StageRun(active.info.run_id, secrets)
