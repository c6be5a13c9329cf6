"""Reading user files (byte-order marks, line numbers) and atomic writes that clean up after killed writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synthembed.errors import UserError
from synthembed.io import HOST, atomic_write, check_writable, read_jsonl, read_records, read_texts, write_jsonl


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path: Path) -> None:
    plain, jsonl = tmp_path / "plain.txt", tmp_path / "rows.jsonl"
    plain.write_bytes("\ufefffirst line\nsecond line\n".encode())
    jsonl.write_bytes('\ufeff{"text": "alpha"}\n{"text": "beta"}\n'.encode())
    assert read_texts(plain) == ["first line", "second line"]
    assert read_texts(jsonl) == ["alpha", "beta"]


def test_line_numbers_are_the_files_own(tmp_path: Path) -> None:
    """Blank lines are skipped but counted; U+2028 and form feeds, which JSON keeps raw, end no line."""
    rows = [{"text": "one\u2028two"}, {"text": "page\x0cbreak"}]
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    path.write_text(path.read_text(encoding="utf-8").replace("\n", "\n\n", 1), encoding="utf-8")
    assert [number for number, _ in read_records(path)] == [1, 3]
    plain = tmp_path / "plain.txt"
    plain.write_text("\n  \nthird\n\nfifth\n")
    assert read_records(plain) == [(3, {"text": "third"}), (5, {"text": "fifth"})]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_atomic_write_removes_only_the_temporaries_of_dead_writers(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".out.jsonl.{HOST}.{dead}.abcd1234.tmp"
        kept = [
            tmp_path / f".out.jsonl.{HOST}.{alive.pid}.abcd1234.tmp",  # a live concurrent writer's
            tmp_path / f".out.jsonl.other-host.{dead}.abcd1234.tmp",  # a writer on another machine sharing the folder
            tmp_path / f".other.jsonl.{HOST}.{dead}.abcd1234.tmp",  # another target's: its own next write cleans it
            tmp_path / ".out.jsonl.abcd1234.tmp",  # an older version's, whose writer cannot be told
        ]
        for path in [stale, *kept]:
            path.write_text("half\n")
        with atomic_write(target) as handle:
            handle.write("new\n")
        assert target.read_text() == "new\n"
        assert sorted(tmp_path.iterdir()) == sorted([target, *kept])
    finally:
        alive.kill()
        alive.wait()


def test_check_writable_creates_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper" / "out.npy")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="it is a directory"):
        check_writable(tmp_path)
