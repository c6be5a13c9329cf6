"""What every task reader shares: opening (gzipped) text, CSV rows, content hashes, seeded row samples.

Each task type's own reader lives with its builder in :mod:`synthembed.evaluate.tasks`; MTEB only sees the
result. A malformed file is a :class:`UserError` naming the file (and line), never a traceback.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import random
from pathlib import Path


def open_text(path: Path) -> io.TextIOBase:
    """Open ``path`` as UTF-8 text, transparently gunzipping ``*.gz``."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def data_revision(*paths: Path) -> str:
    """A short content hash of the files a task reads (MTEB records it as the dataset revision)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def sample_rows(rows: list, limit: int | None, seed: int) -> list:
    """At most ``limit`` rows, a seeded random subset in the original order."""
    if limit is None or limit >= len(rows):
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def read_csv(path: Path, delimiter: str = ",", header: bool = True) -> list[list[str]]:
    """Rows of a CSV/TSV file (``.gz`` allowed), without its header line."""
    with open_text(path) as handle:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        rows = [row for row in csv.reader(handle, delimiter=delimiter, quoting=quoting) if row]
    return rows[1:] if header else rows
