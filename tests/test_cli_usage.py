"""Usage errors, ambiguous params files and colliding outputs: one ``error:`` line and exit code 2, through the
real command line (a subprocess, as a shell runs it); and the rule that finds credentials in params."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def synthembed(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthembed.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "--batch-size", "0", "x"], "error: Invalid value for '--batch-size': "),
        (["search", "q", "--corpus", "c.txt", "-k", "-5"], "error: Invalid value for '--top-k' / '-k': "),
        (["serve", "--port", "70000"], "error: Invalid value for '--port': "),
        (["evaluate", "--max-queries", "0"], "error: Invalid value for '--max-queries': "),
        (["no-such-command"], "error: No such command 'no-such-command'."),
        (["embed", "--no-such-option"], "error: No such option: --no-such-option"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = synthembed(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)
    assert result.stdout == ""


def test_help_still_prints_help(tmp_path: Path) -> None:
    result = synthembed(tmp_path, "embed", "--help")
    assert result.returncode == 0 and "--instruction" in result.stdout


def test_a_section_given_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("model:\n  pooling: mean\nseed: 3\nmodel:\n  batch_size: 4\n")
    result = synthembed(tmp_path, "embed", "x")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params file params.yaml is not valid YAML at line 4: duplicate key 'model'"


def test_evaluate_output_never_overwrites_its_own_table(tmp_path: Path) -> None:
    scores = tmp_path / "out" / "scores.csv"
    args = ["evaluate", "--model", "builtin:all-MiniLM-L6-v2", "--tasks", "STSBenchmark", "-o", str(scores)]
    result = synthembed(tmp_path, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: metrics file {scores} would be overwritten by its own table (.csv); name a .json file"
    )
    assert not scores.exists()


@pytest.mark.parametrize(
    "value",
    [
        "https://user:pass@proxy.example.com/v1",
        "http://Zt9xQ2aLk8mN4pR7@host/v1",
        "https://host/v1?api_key=abc",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5q",
        "hf_AbCdEfGhIj0123456789KlMnOp",
    ],
)
def test_strings_holding_credentials_are_found(value: str) -> None:
    from synthembed.params import credential_path

    assert credential_path({"llm": {"api_base": value}}) == "llm.api_base"


@pytest.mark.parametrize(
    "value",
    ["data/hf_cache_directory/tasks.jsonl", "data/task-list.jsonl", "http://127.0.0.1:8000/v1", "openai/gpt-4o-mini"],
)
def test_ordinary_strings_are_not_credentials(value: str) -> None:
    from synthembed.params import credential_path

    assert credential_path({"brainstorm": {"output": value}, "tags": [value]}) is None
