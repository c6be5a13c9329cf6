"""``dvc.yaml``, made from the stage declarations: ``synthembed pipeline`` prints it, ``--write`` writes it and
``--check`` fails when the file in the repository differs.

Paths come from the params file the pipeline runs with (``params.yaml``), so a change to a path in params means
regenerating the file; values the commands read at run time stay DVC templates (``${model.backbone}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from synthembed.params import Params
from synthembed.pipeline.stage import Stage
from synthembed.pipeline.stages import COMPARISON, PIPELINE

HEADER = """\
# The E5-mistral recipe as a DVC pipeline: each stage is one `synthembed` command reading params.yaml.
# `dvc repro` re-runs only what changed; `dvc exp run -S section.key=value` runs a variant.
# Made from src/synthembed/pipeline/stages.py by `synthembed pipeline --write`; edit the declarations there.
"""
PACKAGE = "src/synthembed"
# What every stage runs (the runner in pipeline/ writes each stage's metrics): a change re-runs the pipeline.
SHARED_CODE = ("pipeline", "errors.py", "io.py", "params.py", "runtime.py")


def code_paths(stage: Stage) -> list[str]:
    return [f"{PACKAGE}/{name}" for name in (*stage.code, *SHARED_CODE)]


def command(stage: Stage) -> str:
    """The stage's command line; one with options (a command several stages share) names its metrics file."""
    words = ["synthembed", stage.cli, *stage.options]
    if stage.options:
        words += ["--output", stage.metrics]
    return " ".join(words)


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as in hand-written dvc.yaml files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120)


def stage_entry(stage: Stage, config: Params) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "cmd": command(stage),
        "deps": [*code_paths(stage), *stage.assets, *stage.inputs(config)],
        "params": list(stage.sections),
    }
    if outputs := stage.outputs(config):
        entry["outs"] = outputs
    entry["metrics"] = [{stage.metrics: {"cache": False}}]
    if stage.plot is not None:
        drawing = {key: value for key, value in vars(stage.plot).items() if value is not None}
        entry["plots"] = [{stage.table: {"cache": False, **drawing}}]
    return entry


def render(config: Params) -> str:
    """The text of ``dvc.yaml`` for ``config``."""
    parts = [HEADER, "stages:\n"]
    for stage in PIPELINE.values():
        if stage.comment:
            parts.append("".join(f"  # {line}\n" for line in stage.comment.splitlines()))
        body = _dump({stage.name: stage_entry(stage, config)})
        parts.append("".join(f"  {line}\n" for line in body.splitlines()) + "\n")
    parts.append(
        "# The trained model against its untrained base and all-MiniLM-L6-v2, task by task (`dvc plots show`).\n"
    )
    parts.append(_dump({"plots": [COMPARISON]}))
    return "".join(parts)


def differences(path: Path, config: Params) -> str | None:
    """None when ``path`` holds what :func:`render` makes, else a one-line reason."""
    if not path.is_file():
        return f"{path} is not a file"
    if path.read_bytes() != render(config).encode():
        return f"{path} differs from the stage declarations; run `synthembed pipeline --write`"
    return None
