"""What a pipeline stage is: one declaration from which its command, its MLflow run and its dvc.yaml entry follow.

A stage names the params it reads, the code it runs, the files it reads and writes, its metrics file and the
function that does the work. That function returns a :class:`StageResult`; the runner
(:func:`synthembed.pipeline.run.run_stage`) writes the metrics file and the table beside it, so a metrics path is
named in one place only: the declaration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from synthembed.params import Params

Paths = Callable[[Params], list[str]]


def no_paths(config: Params) -> list[str]:
    return []


def no_arguments(config: Params) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class StageResult:
    """What a stage hands back: its metrics, the line the CLI prints, optionally a table of rows that is
    written beside the metrics file (``metrics/x.json`` -> ``metrics/x.csv``) for ``dvc plots``, and a markdown
    report that the CLI prints and MLflow keeps."""

    metrics: dict[str, Any]
    summary: str
    table: tuple[list[str], list[tuple[Any, ...]]] | None = None
    warnings: tuple[str, ...] = ()
    report: str | None = None


@dataclass(frozen=True)
class Plot:
    """How ``dvc plots`` draws a stage's table."""

    x: str | None = None
    y: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, declared once.

    ``sections`` are the params it reads (a section, or ``section.key`` for one value of another stage's
    section); ``code`` the package folders and top-level modules of ``src/synthembed`` that its function imports
    (what every stage runs is added from ``dvcfile.SHARED_CODE``; a test compares both with the imports);
    ``assets`` other repository folders it reads, such as its prompt templates; ``inputs`` and ``outputs`` the
    data it reads and writes, as paths taken from params.
    """

    name: str
    help: str
    runs: str  # "module:function"; imported only when the stage runs, so the CLI starts fast
    sections: tuple[str, ...]
    code: tuple[str, ...]
    metrics: str
    assets: tuple[str, ...] = ()
    inputs: Paths = no_paths
    outputs: Paths = no_paths
    plot: Plot | None = None
    command: str = ""  # the synthembed sub-command; the stage's name unless several stages share one
    arguments: Callable[[Params], dict[str, Any]] = no_arguments  # what the function gets besides params
    options: tuple[str, ...] = ()  # the same arguments as command-line options in dvc.yaml (``${}`` allowed)
    logged: Literal["outputs", "sample", "metrics"] = "metrics"  # what goes to MLflow besides the metrics
    comment: str = ""  # a note above the stage in dvc.yaml
    # An LLM stage's "module:function" that plans its requests without sending any (config -> list of requests):
    # its command gets --dry-run, which prints what the run would cost.
    plans: str = ""

    @property
    def cli(self) -> str:
        return self.command or self.name

    @property
    def table(self) -> str | None:
        """The stage's table beside its metrics file, when it writes one."""
        return str(table_path(Path(self.metrics))) if self.plot else None

    def function(self) -> Callable[..., StageResult]:
        return _imported(self.runs)

    def planner(self) -> Callable[[Params], list[Any]]:
        return _imported(self.plans)


def _imported(reference: str) -> Callable[..., Any]:
    """The function that a ``"module:function"`` reference names, imported now (the CLI starts without it)."""
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


def table_path(metrics: Path) -> Path:
    """The per-row CSV beside a metrics file (``metrics/eval.json`` -> ``metrics/eval.csv``)."""
    return metrics.with_suffix(".csv")
