"""The process's runtime, made once at each entry point (the CLI, a launched training rank, the tests).

:func:`start` applies the environment defaults that must hold before torch, LiteLLM or MLflow is imported and
reads the distributed context that torchrun gives a rank; the result is passed on, never read again from the
environment. The Makefile exports the same defaults for ``make repro``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

# No model hub: the CLI leaves these to the user (with network, a Hugging Face id is a valid model).
HUB = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# LiteLLM's bundled price list instead of a download; read when litellm is first imported.
LITELLM = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}
QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # database migrations are not news on every stage
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (``HF_HUB_OFFLINE``), so nothing may be downloaded from it."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def set_defaults(*groups: Mapping[str, str]) -> None:
    """Set each variable unless the environment already has it (the user's choice wins)."""
    for group in groups:
        for key, value in group.items():
            os.environ.setdefault(key, value)


@dataclass(frozen=True)
class Distributed:
    """Which rank this process is; torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` for each."""

    rank: int = 0
    world_size: int = 1
    launched: bool = False  # started by torchrun (also with one process: DeepSpeed needs a process group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Distributed:
        if "LOCAL_RANK" not in environ or "WORLD_SIZE" not in environ:
            return cls()
        return cls(int(environ.get("RANK", "0")), int(environ["WORLD_SIZE"]), launched=True)


SINGLE_PROCESS = Distributed()


@dataclass(frozen=True)
class Runtime:
    """What :func:`start` found, handed on from the entry point (whether the hub is off stays the environment's
    to say: :func:`hub_offline`)."""

    distributed: Distributed = field(default_factory=Distributed)


def start(*, offline: bool = False) -> Runtime:
    """Apply the defaults (``offline`` adds the model-hub ones, so :func:`hub_offline` holds unless the user
    said otherwise) and read this process's rank."""
    set_defaults(LITELLM, QUIET, *([HUB] if offline else []))
    return Runtime(Distributed.from_environment())
