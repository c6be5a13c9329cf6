"""The one record shape every training source is turned into, and its JSONL form under ``data/train/``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthembed.errors import UserError
from synthembed.io import read_jsonl

# The files prepare writes under prepare.output_dir and train reads.
TRAIN_FILE, VALIDATION_FILE = "train.jsonl", "validation.jsonl"


@dataclass(frozen=True)
class TrainRecord:
    """A query with its task instruction, one positive and at most one hard negative.

    ``negative`` is None for kinds the paper trains with in-batch negatives only (short_short, long_long).
    The instruction is kept apart from the query so the E5 prefix is applied in exactly one place (the
    trainer).
    """

    instruction: str
    query: str
    positive: str
    negative: str | None
    source: str
    kind: str

    def key(self) -> tuple[str, str, str]:
        """Identity for deduplication: the same query and positive under the same task."""
        return (self.instruction, self.query, self.positive)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_records(path: str | Path) -> list[TrainRecord]:
    """Read a ``data/train/*.jsonl`` file written by prepare."""
    records = []
    for number, row in enumerate(read_jsonl(path), start=1):
        try:
            records.append(TrainRecord(**row))
        except TypeError:
            raise UserError(f"{path}: record {number} does not have the training-record fields") from None
    return records
