"""Reading user text files and writing outputs atomically (an interrupted command leaves no half file)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from synthembed.errors import UserError

# Temporaries are named for their writer, ``.NAME.HOST.PID.XXXXXXXX.tmp``, so that one left by a killed writer
# can be told apart from one that a live writer (on this machine or another sharing the folder) still uses.
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(path.parent, path.name)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(path: str | Path) -> None:
    """Fail now, naming ``path`` as the user typed it, if no file can be written there: before the work, not
    after it. Writes one byte in the nearest existing folder (which finds a full disk too) and creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        fd, probe = _temporary(folder, path.name)
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _temporary(folder: Path, name: str) -> tuple[int, str]:
    """A new temporary for ``name`` in ``folder``, after removing those of writers that died (SIGKILL, power
    loss) and so could not remove their own; a file as large as the output would otherwise stay forever."""
    pattern = re.compile(rf"\.{re.escape(name)}\.{re.escape(HOST)}\.(\d+)\.[a-z0-9_]{{8}}\.tmp")
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and not _running(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
    return tempfile.mkstemp(dir=folder, prefix=f".{name}.{HOST}.{os.getpid()}.", suffix=".tmp")


def _running(pid: int) -> bool:
    import psutil  # a dependency of accelerate; unlike os.kill(pid, 0), also safe on Windows

    return pid == os.getpid() or psutil.pid_exists(pid)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | Path, data: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """A CSV table with a header row (the shape ``dvc plots`` reads)."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def json_objects(lines: Iterable[str], path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank JSONL line; a bad line is an error naming its number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        yield number, row


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every line a JSON object; a bad line is an error naming its line number."""
    return [row for _, row in json_objects(read_lines(path), path)]


def read_records(path: str | Path, field: str = "text") -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) per text in a file of plain lines (each a row ``{field: line}``) or of JSONL objects
    carrying a string ``field``, told apart by the first non-blank line. Blank lines are skipped but counted,
    so the numbers stay the file's own line numbers."""
    lines = read_lines(path)
    first = next((line for line in lines if line.strip()), "")
    if first.lstrip().startswith("{"):
        records = list(json_objects(lines, path))
        for number, row in records:
            if not isinstance(row.get(field), str):
                raise UserError(f"{path}: line {number} has no string field {field!r}")
    else:
        records = [(number, {field: line}) for number, line in enumerate(lines, start=1) if line.strip()]
    if not records:
        raise UserError(f"{path} holds no text")
    return records


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """Texts from plain lines, or from JSONL whose objects carry ``field``."""
    return [row[field] for _, row in read_records(path, field)]


def read_lines(path: str | Path) -> list[str]:
    """The lines of a user's UTF-8 file. A byte-order mark (Notepad, PowerShell) is dropped, and lines end at
    newlines (``\n`` or ``\r\n``) only, so a text holding U+2028 or a form feed (JSON keeps them raw) is not cut
    in two. A ``.gz`` file is gunzipped."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a file")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return [line.removesuffix("\r") for line in data.decode("utf-8-sig").split("\n")]
    except gzip.BadGzipFile:
        raise UserError(f"file {path} is not gzip (its name ends in .gz)") from None
    except FileNotFoundError:
        raise UserError(f"file {path} not found") from None
    except PermissionError:
        raise UserError(f"file {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise UserError(f"file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
