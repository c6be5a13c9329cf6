"""Every command, driven through the real CLI, turns user mistakes into one ``error:`` line and exit code 2.

Commands are discovered from the Typer app, so a new command is covered by the params and model cases without
editing this file; a command with no known input-file option shows up as an explicit skip, never silently.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.io import atomic_write

COMMANDS = typer.main.get_command(app).commands
# Option naming each command's main input file (for the missing / empty / unreadable input cases).
INPUT_OPTIONS = {"embed": "--input", "search": "--corpus"}
# Stages whose input file is named in params.yaml: params text with {path} (the input) and {tmp} (scratch).
PARAMS_INPUTS = {"prepare": "prepare:\n  synthetic: {path}\n  labeled: []\n  output_dir: {tmp}/out\n"}
# Arguments a command needs before it reaches the step under test (kept cheap: small tasks, no real work).
EXTRA_ARGS = {
    "embed": ["hello"],
    "search": ["a query"],
    "serve": ["--port", "0"],
    "evaluate": ["--tasks", "STSBenchmark"],
}
BAD_PARAMS = {
    "bad_yaml": ("model: [unclosed\n", "not valid YAML"),
    "unknown_key": ("model:\n  poolin: mean\n", "unknown key 'model.poolin'"),
    "bad_value": ("model:\n  max_seq_length: -3\n", "model.max_seq_length"),
    "not_a_mapping": ("- just\n- a list\n", "must be a mapping"),
}


def _has_option(command: str, option: str) -> bool:
    return any(option in param.opts for param in COMMANDS[command].params)


def _invoke(command: str, args: list[str], tmp_path: Path, input_file: Path | None = None):
    """Run ``synthembed COMMAND`` with its extra arguments; the input option names a valid file by default."""
    argv = [command, *EXTRA_ARGS.get(command, [])]
    if command in INPUT_OPTIONS and INPUT_OPTIONS[command] not in args:
        if input_file is None:
            input_file = tmp_path / "input.txt"
            input_file.write_text("a first line\na second line\n")
        argv += [INPUT_OPTIONS[command], str(input_file)]
    return CliRunner().invoke(app, [*argv, *args])


def _assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_commands_are_discovered() -> None:
    assert {"embed", "search", "serve"} <= set(COMMANDS)
    assert all(_has_option(name, "--params") for name in COMMANDS), "every command takes --params"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_malformed_params_file(command: str, case: str, tmp_path: Path) -> None:
    content, message = BAD_PARAMS[case]
    params = tmp_path / "params.yaml"
    params.write_text(content)
    _assert_one_error_line(_invoke(command, ["--params", str(params)], tmp_path), str(params), message)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", ["missing", "directory", "not_utf8"])
def test_unreadable_params_file(command: str, case: str, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    if case == "directory":
        params.mkdir()
    elif case == "not_utf8":
        params.write_bytes(b"model:\n  pooling: \xff\xfe\n")
    _assert_one_error_line(_invoke(command, ["--params", str(params)], tmp_path), str(params))


def _model_cases():
    for command in sorted(COMMANDS):
        reason = f"{command} has no --model option"
        marks = [] if _has_option(command, "--model") else [pytest.mark.skip(reason=reason)]
        yield pytest.param(command, marks=marks, id=command)


@pytest.mark.parametrize("command", list(_model_cases()))
def test_unknown_model_reference(command: str, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    result = _invoke(command, ["--params", str(params), "--model", "no-such-model"], tmp_path)
    _assert_one_error_line(result, "unknown model reference 'no-such-model'")


def _input_cases():
    for command in sorted(COMMANDS):
        for case in ("missing", "empty", "directory", "not_utf8"):
            reason = f"no input file known for {command}; add it to INPUT_OPTIONS or PARAMS_INPUTS"
            known = command in INPUT_OPTIONS or command in PARAMS_INPUTS
            yield pytest.param(command, case, marks=[] if known else [pytest.mark.skip(reason=reason)])


@pytest.mark.parametrize(("command", "case"), list(_input_cases()))
def test_bad_input_file(command: str, case: str, tmp_path: Path) -> None:
    path = tmp_path / "input.jsonl"
    if case == "empty":
        path.write_text("\n\n")
    elif case == "directory":
        path.mkdir()
    elif case == "not_utf8":
        path.write_bytes(b"\xff\xfe\x00bad\n")
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_INPUTS.get(command, "seed: 1\n").format(path=path, tmp=tmp_path))
    result = _invoke(command, ["--params", str(params)], tmp_path, input_file=path)
    _assert_one_error_line(result, str(path))


@pytest.mark.skipif("evaluate" not in COMMANDS, reason="evaluate is not a command yet")
def test_unknown_task(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    result = CliRunner().invoke(app, ["evaluate", "--tasks", "NoSuchTask", "--params", str(params)])
    _assert_one_error_line(result, "NoSuchTask")


def test_serve_on_a_busy_port(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        result = CliRunner().invoke(app, ["serve", "--port", port, "--params", str(params)])
    _assert_one_error_line(result, f"cannot listen on 127.0.0.1:{port}")


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    code = "from synthembed.cli import run; run()"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True, **kwargs)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    args = ["search", "q", "--corpus", str(tmp_path), "--params", missing]  # search imports little
    plain = _cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = plain.communicate(timeout=120)
    assert plain.returncode == 2 and err.strip() == f"error: params file {missing} not found"
    debug = _cli("--debug", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = debug.communicate(timeout=120)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in err and "UserError: params file" in err


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old complete content\n")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as handle:
        handle.write("half of the new ")
        raise KeyboardInterrupt
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_ctrl_c_leaves_no_output_file(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    """SIGINT while a real ``embed`` run is working: exit 130, one line, no output and no temporary file."""
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"sentence number {i} with a few more words to embed\n" for i in range(40000)))
    output = tmp_path / "out" / "vectors.npy"
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    args = ["-i", str(texts), "-o", str(output), "--model", str(tiny_decoder_dir), "--batch-size", "8"]
    process = _cli("embed", *args, "--params", str(params), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[str] = []
    chunks = iter(lambda: process.stderr.read(64), "")
    reader = threading.Thread(target=lambda: seen.extend(chunks), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while "Batches" not in "".join(seen) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, f"embed ended before it could be interrupted: {''.join(seen)}"
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    reader.join(timeout=10)
    assert process.returncode == 130, "".join(seen)
    assert "error: interrupted" in "".join(seen) and "Traceback" not in "".join(seen)
    assert not output.exists()
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
