"""Every command, driven through the real CLI, turns user mistakes into one ``error:`` line and exit code 2.

Commands are discovered from the Typer app, so a new command is covered by the params and model cases without
editing this file; a command with no known input-file option shows up as an explicit skip, never silently.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.io import atomic_write

COMMANDS = typer.main.get_command(app).commands
# Option naming each command's main input file (for the missing / empty / unreadable input cases).
INPUT_OPTIONS = {"embed": "--input", "search": "--corpus", "pipeline": "--dvc-file"}
# Stages whose input file is named in params.yaml: params text with {path} (the input) and {tmp} (scratch).
PARAMS_INPUTS = {"prepare": "prepare:\n  synthetic: {path}\n  grounded: null\n  labeled: []\n  output_dir: {tmp}/out\n"}
# Arguments a command needs before it reaches the step under test (kept cheap: small tasks, no real work).
EXTRA_ARGS = {
    "embed": ["hello"],
    "search": ["a query"],
    "serve": ["--port", "0"],
    "evaluate": ["--tasks", "STSBenchmark"],
    "pipeline": ["--check"],
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


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a refused command must leave exactly as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A real, small file system mounted at ``folder``; mounting needs root, so the test skips elsewhere."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def _read_only(folder: Path, files: dict[str, str]) -> Iterator[Path]:
    """``folder`` holding ``files``, then read-only: by its mode for a user, and for root, whom modes do not
    stop, as a read-only tmpfs."""
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            stack.enter_context(_tmpfs(folder))
        else:
            folder.mkdir()
            stack.callback(folder.chmod, 0o755)
        for name, text in files.items():
            (folder / name).write_text(text)
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            folder.chmod(0o555)
        yield folder


@pytest.mark.parametrize(
    ("texts", "jsonl", "message"),
    [
        (["fine", ""], None, "TEXTS[1] is empty"),
        (["   "], None, "TEXTS[0] is empty"),
        ([], [{"text": "fine"}, {"text": "great day \ud83d"}], "texts.jsonl[1] is not valid Unicode"),
        ([], [{"text": "\t"}], "texts.jsonl[0] is empty"),
    ],
)
def test_embed_refuses_texts_before_loading_the_model(
    tmp_path: Path, texts: list[str], jsonl: list[dict] | None, message: str
) -> None:
    """The server's rule (empty text: 422) holds for ``embed`` too, checked before any model loads: the
    reference here names no model, so reaching the model would be a different error."""
    args = [*texts, "--model", "no-such-model"]
    if jsonl is not None:
        source = tmp_path / "texts.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in jsonl))
        args += ["--input", str(source)]
    before = _snapshot(tmp_path)
    _assert_one_error_line(CliRunner().invoke(app, ["embed", *args, "-o", str(tmp_path / "out.npy")]), message)
    assert _snapshot(tmp_path) == before


def test_embed_refuses_command_line_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """Python turns such bytes into lone surrogates, which crashed the tokenizer with a TypeError."""
    argv = [sys.executable, "-m", "synthembed.cli", "embed", b"caf\xe9", "--model", "no-such-model"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: TEXTS[0] is not valid Unicode: a lone surrogate '\\udce9' at character 3 "
        "(a string cut through an emoji, or bytes that are not UTF-8)"
    )


@pytest.mark.parametrize("case", ["directory", "parent_is_a_file", "read_only", "full"])
def test_embed_output_is_checked_before_the_work(tmp_path: Path, case: str) -> None:
    """Each fails at once (the model reference is never reached) with one line naming the path as typed."""
    with contextlib.ExitStack() as stack:
        if case == "directory":
            output, reason = tmp_path / "vectors.npy", "it is a directory"
            output.mkdir()
            (output / "kept.txt").write_text("mine\n")
        elif case == "parent_is_a_file":
            (tmp_path / "notes").write_text("mine\n")
            output, reason = tmp_path / "notes" / "sub" / "vectors.npy", f"{tmp_path / 'notes'} is a file"
        elif case == "read_only":
            folder = stack.enter_context(_read_only(tmp_path / "ro", {"vectors.npy": "old vectors\n"}))
            output, reason = folder / "vectors.npy", "cannot write"
        else:
            folder = stack.enter_context(_tmpfs(tmp_path / "full", size="64k"))
            output, reason = folder / "vectors.npy", "No space left on device"
            output.write_text("old vectors\n")
            with contextlib.suppress(OSError), open(folder / "filler", "wb") as filler:
                while True:
                    filler.write(b"\0" * 4096)
                    filler.flush()
        before = _snapshot(tmp_path)
        result = CliRunner().invoke(app, ["embed", "hello", "-o", str(output), "--model", "no-such-model"])
        _assert_one_error_line(result, f"cannot write {output}: ", reason)
        assert ".tmp" not in result.stderr
        assert _snapshot(tmp_path) == before


def test_search_in_a_read_only_folder_still_searches(tmp_path: Path, minilm_dir: Path) -> None:
    """Only the index is not kept: one warning line, and the folder is left as it was."""
    docs = {"corpus.txt": "Paris is the capital of France.\nBananas are a yellow fruit.\n"}
    with _read_only(tmp_path / "ro", docs) as folder:
        corpus = folder / "corpus.txt"
        argv = ["search", "yellow fruit", "--corpus", str(corpus), "--model", str(minilm_dir), "--instruction", ""]
        result = CliRunner().invoke(app, [*argv, "-k", "1", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)[0]["hits"][0]["id"] == "1"
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        assert warnings == [
            f"warning: searched 2 documents without saving the index (cannot write {corpus}.index/embeddings.npy: "
            f"{'Read-only file system' if os.geteuid() == 0 else 'Permission denied'})"
        ], result.stderr
        assert "error" not in result.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["corpus.txt"]


def _search_args(corpus: Path, *args: str) -> list[str]:
    return ["search", "capital", "--corpus", str(corpus), "--model", "no-such-model", *args]


def test_search_refuses_a_folder_that_is_not_an_index(tmp_path: Path) -> None:
    """``--index .`` in a web app's folder must not delete its manifest.json and faiss.index; nor may an
    ``--index`` that is a file be written over. Both are refused before the model is reached."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my app", "start_url": "/"}\n')
    (web / "faiss.index").write_bytes(b"someone else's index")
    (web / "index.html").write_text("<!doctype html>\n")
    corpus = web / "corpus.txt"
    corpus.write_text("Paris is the capital of France.\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, _search_args(corpus, "--index", str(web)))
    _assert_one_error_line(result, f"index folder {web} holds files that are not part of a search index")
    assert "(corpus.txt, index.html)" in result.stderr
    result = CliRunner().invoke(app, _search_args(corpus, "--index", str(notes)))
    _assert_one_error_line(result, f"index folder {notes} is a file, not a folder")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("queries", "rows", "message"),
    [
        (["capital", "   "], None, "QUERIES[1] is empty"),
        (["broken \udce9 bytes"], None, "QUERIES[0] is not valid Unicode"),
        (["capital"], [{"id": "a", "text": "fine"}, {"id": "b", "text": " "}], "corpus.jsonl: document[1] is empty"),
        (["capital"], [{"id": "a", "text": "great day \ud83d"}], "corpus.jsonl: document[0] is not valid Unicode"),
    ],
)
def test_search_refuses_texts_before_loading_the_model(
    tmp_path: Path, queries: list[str], rows: list[dict] | None, message: str
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows or [{"text": "Paris is in France."}]))
    before = _snapshot(tmp_path)
    argv = ["search", *queries, "--corpus", str(corpus), "--model", "no-such-model"]
    _assert_one_error_line(CliRunner().invoke(app, argv), message)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "content", "shape"),
    [
        ("config.json", "{broken", "an object"),
        ("config.json", "[]", "an object"),
        ("modules.json", '[{"idx": 0', "a list"),
        ("tokenizer_config.json", "\xff\xfe", "an object"),
    ],
)
def test_broken_model_config_is_one_line(tmp_path: Path, minilm_dir: Path, name: str, content: str, shape: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(minilm_dir, model)
    (model / name).write_bytes(content.encode("latin-1"))
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["embed", "hello", "--model", str(model)])
    _assert_one_error_line(result, f"model file {model / name} is broken: it does not hold a JSON {shape}")
    assert _snapshot(tmp_path) == before


WRITER = """
import sys, time
from synthembed.io import atomic_write
with atomic_write(sys.argv[1], "wb") as handle:
    handle.write(b"x" * 1_000_000)
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def test_a_killed_writer_leaves_no_temporary_for_good(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    """SIGKILL in the middle of a write leaves its temporary; the next run for the same output removes it,
    but never the temporary of a writer that is still running."""
    output = tmp_path / "vectors.npy"
    output.write_bytes(b"old vectors")
    killed, live = (
        subprocess.Popen([sys.executable, "-c", WRITER, str(output)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    )
    try:
        for writer in (killed, live):
            assert writer.stdout.readline() == "writing\n"
        killed.kill()
        killed.wait(timeout=30)
        temporaries = {p.name for p in tmp_path.glob(".vectors.npy.*.tmp")}
        assert len(temporaries) == 2 and all(p.stat().st_size == 1_000_000 for p in tmp_path.glob(".*.tmp"))
        assert output.read_bytes() == b"old vectors"
        params = tmp_path / "params.yaml"
        params.write_text("seed: 1\n")
        argv = ["embed", "hello", "-o", str(output), "--model", str(tiny_decoder_dir), "--params", str(params)]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, result.output
        assert [p.name for p in tmp_path.glob(".vectors.npy.*.tmp")] == [
            name for name in temporaries if f".{live.pid}." in name
        ]
        assert output.read_bytes().startswith(b"\x93NUMPY")
    finally:
        live.kill()
        live.wait(timeout=30)
