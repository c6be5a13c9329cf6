"""Reading user text files and writing outputs atomically (an interrupted command leaves no half file)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from synthembed.errors import UserError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
    return [row for _, row in json_objects(_read_lines(path), path)]


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """Texts from plain lines, or from JSONL whose objects carry ``field`` (detected from the first line)."""
    lines = _read_lines(path)
    first = next((line for line in lines if line.strip()), "")
    if not first.lstrip().startswith("{"):
        texts = [line for line in lines if line.strip()]
    else:
        texts = []
        for number, row in json_objects(lines, path):
            if not isinstance(row.get(field), str):
                raise UserError(f"{path}: line {number} has no string field {field!r}")
            texts.append(row[field])
    if not texts:
        raise UserError(f"{path} holds no text")
    return texts


def _read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"file {path} not found") from None
    except PermissionError:
        raise UserError(f"file {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise UserError(f"file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
