"""The stage declarations are the one description of the pipeline: dvc.yaml, the CLI, the code each stage runs
and the params schema must agree with them, and the package has no import cycles."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.params import Params, load_params
from synthembed.pipeline.dvcfile import SHARED_CODE, render
from synthembed.pipeline.stage import Stage, StageResult
from synthembed.pipeline.stages import PIPELINE
from synthembed.runtime import SINGLE_PROCESS, Distributed
from synthembed.tracking.runs import section_params
from tests.conftest import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "src" / "synthembed"


def module_file(name: str) -> Path | None:
    """The source file of a ``synthembed`` module or package, or None for anything else."""
    parts = name.split(".")
    if parts[0] != "synthembed":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(name: str) -> set[str]:
    """The synthembed modules that module ``name`` imports anywhere in its body (lazy imports included)."""
    file = module_file(name)
    found: set[str] = set()
    package = name if file is not None and file.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from a.b import c` imports module a.b.c when there is one
                found.add(f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}") else base)
    return {module for module in found if module_file(module) is not None and module != name}


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports_of(module))
    return seen


def code_of(module: str) -> str:
    """The dvc.yaml dependency that covers ``module``: its package folder, or the top-level file."""
    relative = module_file(module).relative_to(PACKAGE_DIR)
    return relative.parts[0] if len(relative.parts) > 1 else relative.name


def all_modules() -> list[str]:
    names = []
    for file in PACKAGE_DIR.rglob("*.py"):
        parts = file.relative_to(PACKAGE_DIR).with_suffix("").parts
        names.append(".".join(("synthembed", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return sorted(names)


@pytest.mark.parametrize("stage", PIPELINE.values(), ids=list(PIPELINE))
def test_a_stage_declares_exactly_the_code_it_runs(stage) -> None:
    module = stage.runs.split(":")[0]
    used = {code_of(name) for name in closure(module)} - set(SHARED_CODE)
    assert used == set(stage.code), f"{stage.name} runs {sorted(used)}, declares {sorted(stage.code)}"
    assert callable(stage.function())


def test_shared_code_is_what_every_stage_runs() -> None:
    """Shared code that some stage does not run would re-run that stage for nothing."""
    runner = closure("synthembed.pipeline.run")
    runs = [{code_of(m) for m in closure(s.runs.split(":")[0]) | runner} for s in PIPELINE.values()]
    assert set(SHARED_CODE) <= set.intersection(*runs)


@pytest.mark.parametrize("stage", PIPELINE.values(), ids=list(PIPELINE))
def test_declared_params_exist_and_options_match_the_arguments(stage) -> None:
    config = load_params(REPO_ROOT / "params.yaml")
    assert section_params(config, stage.sections)  # an unknown section or key raises
    dumped = config.model_dump(mode="json")

    def resolve(text: str) -> str:
        def value(match: re.Match) -> str:
            node = dumped
            for part in match[1].split("."):
                node = node[part]
            return str(node)

        return re.sub(r"\$\{([\w.]+)\}", value, text)

    options = [resolve(word) for word in stage.options]
    given = dict(zip(options[::2], options[1::2], strict=True))
    assert {key.removeprefix("--"): value for key, value in given.items()} == {
        key: value for key, value in stage.arguments(config).items() if key in ("model",)
    } or not stage.options


def test_dvc_yaml_is_made_from_the_declarations() -> None:
    assert (REPO_ROOT / "dvc.yaml").read_text() == render(load_params(REPO_ROOT / "params.yaml"))
    checked = CliRunner().invoke(app, ["pipeline", "--check", "--dvc-file", str(REPO_ROOT / "dvc.yaml"),
                                       "--params", str(REPO_ROOT / "params.yaml")])  # fmt: skip
    assert checked.exit_code == 0, checked.output


def test_pipeline_check_fails_on_a_hand_edit(tmp_path: Path) -> None:
    edited = tmp_path / "dvc.yaml"
    edited.write_text((REPO_ROOT / "dvc.yaml").read_text().replace("      - prompts/generate\n", ""))
    checked = CliRunner().invoke(app, ["pipeline", "--check", "--dvc-file", str(edited)])
    assert checked.exit_code == 2
    assert checked.output.strip().splitlines() == [
        f"error: {edited} differs from the stage declarations; run `synthembed pipeline --write`"
    ]


def test_every_stage_has_its_command() -> None:
    commands = {command.name or command.callback.__name__ for command in app.registered_commands}
    assert {stage.cli for stage in PIPELINE.values()} <= commands
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(PIPELINE)


def test_a_stage_command_hands_on_the_rank_its_runtime_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's runtime, made once at the entry point, gives train the rank torchrun set; only the main rank
    writes the stage's metrics and records its run, and MLflow's global URI is put back after it."""
    import mlflow

    seen: list[Distributed] = []

    def train(config: Params, distributed: Distributed = SINGLE_PROCESS) -> StageResult:
        seen.append(distributed)
        return StageResult({"steps": 1} if distributed.is_main else {}, "trained")

    monkeypatch.setattr(Stage, "function", lambda self: train)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    before = mlflow.get_tracking_uri()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        result = CliRunner().invoke(app, ["train"])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "metrics" / "train.json").exists() is (rank == "0")
    assert seen == [Distributed(1, 2, launched=True), Distributed(0, 2, launched=True)]
    assert json.loads((tmp_path / "metrics" / "train.json").read_text()) == {"steps": 1}
    assert mlflow.get_tracking_uri() == before
    client = mlflow.MlflowClient(before)
    runs = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    assert [run.info.run_name for run in runs] == ["train"]


def _keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict) and not prefix + key == "generate.kinds":
            keys |= _keys(value, f"{prefix}{key}.")
    return keys


def test_params_yaml_spells_out_the_schema_defaults() -> None:
    """One source of defaults: the schema's defaults are the shipped recipe, and params.yaml holds every key."""
    shipped = load_params(REPO_ROOT / "params.yaml")
    assert shipped == Params()
    written = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert _keys(written) == _keys(Params().model_dump(mode="json"))


def test_no_import_cycles() -> None:
    graph = {module: imports_of(module) for module in all_modules()}
    cycles = []
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert cycles == []
