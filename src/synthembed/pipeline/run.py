"""Running a declared stage: the same way from the CLI, from DVC and from Python.

:func:`run_stage` calls the stage's function inside one MLflow run (its params sections, a hash of its inputs,
provenance tags), writes the metrics file and table the declaration names, and logs them with the numeric
metrics; ``track=False`` skips MLflow (the stage's files are written all the same). The process's rank comes
from the entry point's runtime (``distributed``); a function that takes one (train) gets it.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from synthembed.errors import UserError
from synthembed.io import write_csv, write_json
from synthembed.params import Params
from synthembed.pipeline.stage import Stage, StageResult, table_path
from synthembed.pipeline.stages import PIPELINE
from synthembed.runtime import SINGLE_PROCESS, Distributed

SAMPLE_LINES = 20  # the lines of a large JSONL output that MLflow keeps as a sample


def stage_named(name: str) -> Stage:
    try:
        return PIPELINE[name]
    except KeyError:
        raise UserError(f"unknown stage {name!r}; stages: {', '.join(PIPELINE)}") from None


def run_stage(
    stage: Stage | str,
    config: Params,
    *,
    metrics: str | Path | None = None,
    inputs: Iterable[str | Path] = (),
    track: bool = True,
    distributed: Distributed = SINGLE_PROCESS,
    **arguments: Any,
) -> StageResult:
    """Run ``stage`` with ``config``; ``arguments`` override the declared ones, ``metrics`` the metrics path
    (an ad hoc evaluation), ``inputs`` add files to the hashed inputs (a model folder named on the command line).

    ``distributed`` is the rank the entry point's runtime read: the stage's function gets it when it takes a
    ``distributed`` argument, and a rank other than the main one only runs the function (the main rank writes
    the stage's files and records its run)."""
    stage = stage_named(stage) if isinstance(stage, str) else stage
    metrics_path = Path(metrics or stage.metrics)
    if table_path(metrics_path) == metrics_path:
        raise UserError(f"metrics file {metrics_path} would be overwritten by its own table (.csv); name a .json file")
    function = stage.function()
    arguments = {**stage.arguments(config), **arguments}
    if "distributed" in inspect.signature(function).parameters:
        arguments["distributed"] = distributed
    if not distributed.is_main:
        return function(config, **arguments)
    with _tracked(stage, config, [*stage.inputs(config), *inputs], track) as run:
        result = function(config, **arguments)
        write_json(metrics_path, result.metrics)
        table = None
        if result.table is not None:
            table = table_path(metrics_path)
            write_csv(table, *result.table)
        if run is not None:
            run.log_metrics(result.metrics)
            for artifact in (metrics_path, table):
                if artifact is not None:
                    run.log_artifact(artifact)
            if result.report is not None:
                run.log_text(result.report, f"{metrics_path.stem}.md")
            _log_outputs(run, stage, config)
    return result


@contextlib.contextmanager
def _tracked(stage: Stage, config: Params, inputs: list[str | Path], track: bool) -> Iterator[Any]:
    if not track:
        yield None
        return
    from synthembed.tracking import stage_run

    with stage_run(config, stage.name, sections=stage.sections, inputs=inputs) as run:
        yield run


def _log_outputs(run: Any, stage: Stage, config: Params) -> None:
    """Small outputs go to MLflow whole; a large JSONL output as its first lines."""
    if stage.logged == "metrics":
        return
    for output in map(Path, stage.outputs(config)):
        if not output.is_file():
            continue
        if stage.logged == "outputs":
            run.log_artifact(output)
            continue
        with tempfile.TemporaryDirectory() as folder:
            sample = Path(folder) / f"sample_{output.name}"
            with open(output, encoding="utf-8") as source:
                sample.write_text("".join(itertools.islice(source, SAMPLE_LINES)), encoding="utf-8")
            run.log_artifact(sample)
