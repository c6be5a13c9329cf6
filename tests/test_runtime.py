"""The runtime made at each entry point: environment defaults that never override the user, and the rank read
once from what torchrun sets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from synthembed import runtime
from synthembed.encoder.references import scheme_resolvers
from synthembed.runtime import Distributed


def test_the_rank_comes_from_torchrun_variables_only() -> None:
    assert Distributed.from_environment({}) == runtime.SINGLE_PROCESS
    assert not runtime.SINGLE_PROCESS.launched and runtime.SINGLE_PROCESS.is_main
    second = Distributed.from_environment({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert second == Distributed(rank=1, world_size=2, launched=True) and not second.is_main
    alone = Distributed.from_environment({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    assert alone.launched and alone.world_size == 1  # DeepSpeed on one device still runs under torchrun


def test_defaults_never_override_the_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    started = runtime.start()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true" and os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert "HF_HUB_OFFLINE" not in os.environ  # the CLI leaves the model hub to the user
    assert started.distributed == runtime.SINGLE_PROCESS and not runtime.hub_offline()
    runtime.start(offline=True)
    assert runtime.hub_offline() and os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_user_decides_whether_the_hub_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    runtime.start(offline=True)
    assert not runtime.hub_offline()  # the tests' offline default never overrides the user's choice
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runtime.hub_offline()


def test_importing_the_params_schema_installs_no_warning_filter() -> None:
    """pydantic's warning about the ``register`` field is silenced for that class statement only: no filter is
    left for the process, and nothing is printed even with every warning shown."""
    code = (
        "import warnings; before = list(warnings.filters); import synthembed.params; "
        "assert warnings.filters == before, warnings.filters[:3]"
    )
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_tracking_adds_the_mlflow_reference_schemes() -> None:
    """models:/ and runs:/ reach encoder.references through the package's entry points, not an import."""
    assert {"builtin", "models", "runs"} <= set(scheme_resolvers())
