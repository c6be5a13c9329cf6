"""Environment defaults for running without network, in one place.

The test suite and the benchmarks apply all of them (``use_offline_defaults``); the Makefile exports the same
list for ``make repro``. The CLI leaves the model-hub settings to the user (with network, a Hugging Face id is a
valid model) and applies only what must never go out: LiteLLM's price list (``synth/client.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

HUB = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
LITELLM = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}  # before litellm is imported
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "TOKENIZERS_PARALLELISM": "false"}


def set_defaults(*groups: Mapping[str, str]) -> None:
    """Set each variable unless the environment already has it."""
    for group in groups:
        for key, value in group.items():
            os.environ.setdefault(key, value)


def use_offline_defaults() -> None:
    set_defaults(HUB, LITELLM, QUIET)
