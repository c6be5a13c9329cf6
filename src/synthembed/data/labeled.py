"""Labeled sets under ``data/labeled/``: JSONL of instruction, query, positive and optional negative."""

from __future__ import annotations

from pathlib import Path

from synthembed.data.records import TrainRecord
from synthembed.errors import UserError
from synthembed.io import read_jsonl


def read_labeled(path: str | Path) -> list[TrainRecord]:
    """Records of one labeled set; its source name is the file stem (``scifact_train``)."""
    path = Path(path)
    records = []
    for number, row in enumerate(read_jsonl(path), start=1):
        fields = {key: row.get(key) for key in ("instruction", "query", "positive")}
        missing = [key for key, value in fields.items() if not isinstance(value, str) or not value.strip()]
        if missing:
            raise UserError(f"{path}: record {number} lacks {', '.join(missing)}")
        negative = row.get("negative")
        if negative is not None and not isinstance(negative, str):
            raise UserError(f"{path}: record {number} has a negative that is not a string")
        records.append(
            TrainRecord(
                instruction=fields["instruction"].strip(),
                query=fields["query"].strip(),
                positive=fields["positive"].strip(),
                negative=negative.strip() if negative and negative.strip() else None,
                source=path.stem,
                kind="labeled",
            )
        )
    return records
