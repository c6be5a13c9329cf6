"""A non-editable install: the wheel carries the prompts and the bundled evaluation data, and the commands
work from a folder outside the repository, with or without a params file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from llm_server import FakeLLMServer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (
    "synthembed/prompts/brainstorm/short_long.j2",
    "synthembed/prompts/generate/sts.j2",
    "synthembed/eval_data/scifact/corpus.jsonl.gz",
    "synthembed/eval_data/stsbenchmark/stsb-en-test.csv",
    "synthembed/train/deepspeed/zero3.json",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout, installed (without dependencies) into its own folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for part in ("pyproject.toml", "README.md"):
        (source / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / part, source / part)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("src", "prompts", "data/eval"):  # the package links to the last two
        shutil.copytree(REPO / part, source / part, symlinks=True, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", source], check=True)
    (wheel,) = (work / "dist").glob("synthembed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names, sorted(set(SHIPPED) - names)
    subprocess.run([*pip, "install", "--no-deps", "--target", work / "site", wheel], check=True)
    return work / "site"


def synthembed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``synthembed ARGS`` in ``cwd`` with the installed wheel ahead of the checkout on the path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, "-m", "synthembed.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_repository(installed: Path, tmp_path: Path) -> None:
    probe = synthembed(installed, tmp_path, "--help")
    assert probe.returncode == 0, probe.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import synthembed; print(synthembed.__file__)"],
        env={**os.environ, "PYTHONPATH": str(installed)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed)  # the wheel's copy, not the checkout

    # No params.yaml anywhere: the built-in defaults. The README's first example and a bundled task.
    embedded = synthembed(installed, tmp_path, "embed", "a sentence", "--model", "builtin:all-MiniLM-L6-v2")
    assert embedded.returncode == 0, embedded.stderr
    assert len(json.loads(embedded.stdout)["embedding"]) == 384
    options = ["--tasks", "STSBenchmark", "--max-queries", "60", "-o", "scores.json"]
    scored = synthembed(installed, tmp_path, "evaluate", "--model", "builtin:all-MiniLM-L6-v2", *options)
    assert scored.returncode == 0, scored.stderr
    assert json.loads((tmp_path / "scores.json").read_text())["STSBenchmark"]["main_score"] > 0.5

    missing = synthembed(installed, tmp_path, "embed", "x", "--params", "nowhere.yaml")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: params file nowhere.yaml not found"


@pytest.mark.slow
def test_installed_wheel_renders_its_prompts(installed: Path, tmp_path: Path) -> None:
    with FakeLLMServer() as server:
        llm = {"model": "openai/fake-llm", "api_base": server.api_base, "cache_dir": "cache"}
        config = {"llm": llm, "brainstorm": {"requests_per_kind": 1, "kinds": ["short_long"]}}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
        result = synthembed(installed, tmp_path, "brainstorm")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "synthetic" / "tasks.jsonl").read_text().strip()
    (prompt,) = [json.loads(request)[0] for request in server.received]
    template = (REPO / "prompts" / "brainstorm" / "short_long.j2").read_text()
    assert template.split("{", 1)[0].strip()[:40] in prompt  # the shipped template's opening words
