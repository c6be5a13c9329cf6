"""MLflow tracking (one run per stage) and the model registry (``models:/`` references, the champion)."""

from synthembed.tracking.registry import download_model, metric_value, run_register
from synthembed.tracking.runs import StageRun, hash_inputs, numeric_metrics, stage_run, tracking_uri

__all__ = [
    "StageRun",
    "download_model",
    "hash_inputs",
    "metric_value",
    "numeric_metrics",
    "run_register",
    "stage_run",
    "tracking_uri",
]
