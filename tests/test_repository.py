"""A fresh clone is an experiment repository: the reference run's dvc.lock, metrics and plot tables are
committed, so DVC shows them right after ``git clone``, and they belong to the committed params."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    target = tmp_path_factory.mktemp("clone") / "synthembed"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(target)], check=True)
    return target


def dvc_json(clone: Path, *args: str) -> dict:
    done = subprocess.run([DVC, *args, "--json"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def declared(kind: str) -> list[str]:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return [next(iter(item)) for stage in stages.values() for item in stage.get(kind, [])]


def test_every_metrics_file_and_plot_table_is_in_a_clone(clone: Path) -> None:
    assert (clone / "dvc.lock").is_file()
    missing = [path for path in declared("metrics") + declared("plots") if not (clone / path).is_file()]
    assert missing == []
    (shown,) = (revision["data"] for revision in dvc_json(clone, "metrics", "show").values())  # the workspace
    scores = shown["metrics/eval.json"]["data"]
    tasks = [entry for entry in scores.values() if "main_score" in entry]
    assert tasks and all(0 <= task["main_score"] <= 1 and task["precision"] == "fp32" for task in tasks)
    assert 0 <= scores["average"]["overall"] <= 1 and scores["scored_on"]["precision"] == "fp32"
    bars = dvc_json(clone, "plots", "show")["data"]["per_task_comparison"][0]["content"]["data"]["values"]
    assert {bar["filename"] for bar in bars} == {"eval.csv", "eval_base.csv", "eval_reference.csv"}


def test_the_committed_run_belongs_to_the_committed_params(clone: Path) -> None:
    """Change params.yaml and the reference run must be re-made and committed with it."""
    status = dvc_json(clone, "status")
    stale = {
        stage: change["changed deps"]
        for stage, changes in status.items()
        for change in changes
        if isinstance(change, dict) and any(dep.startswith("params.yaml") for dep in change.get("changed deps", {}))
    }
    assert stale == {}
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
