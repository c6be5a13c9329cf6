"""Synthetic examples (``data/synthetic/examples.jsonl``) mapped to training records per kind, the way the
paper turns each kind into (query, positive, hard negative)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from synthembed.data.records import TrainRecord
from synthembed.io import read_jsonl

# The paper's fixed instructions for the symmetric kinds, used when an example carries no task text.
STS_INSTRUCTION = "Retrieve semantically similar text."
BITEXT_INSTRUCTION = "Retrieve parallel sentences."

# kind -> (query key, positive key, hard-negative key or None)
FIELDS: dict[str, tuple[str, str, str | None]] = {
    "short_long": ("user_query", "positive_document", "hard_negative_document"),
    "long_short": ("input_text", "label", "misleading_label"),
    "short_short": ("input", "positive_document", None),
    "long_long": ("input", "positive_document", None),
    "sts": ("S1", "S2", "S3"),
    "bitext": ("S1", "S2", "S3"),
}
DEFAULT_TASK = {"sts": STS_INSTRUCTION, "bitext": BITEXT_INSTRUCTION}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def to_record(example: dict[str, Any], source: str = "synthetic") -> TrainRecord | None:
    """The training record for one example, or None when it lacks a field its kind needs."""
    kind = example.get("kind")
    if kind not in FIELDS or not isinstance(example.get("data"), dict):
        return None
    query_key, positive_key, negative_key = FIELDS[kind]
    data = example["data"]
    task = _text(example.get("task")) or DEFAULT_TASK.get(kind)
    query, positive = _text(data.get(query_key)), _text(data.get(positive_key))
    negative = _text(data.get(negative_key)) if negative_key else None
    if task is None or query is None or positive is None or (negative_key and negative is None):
        return None
    if negative in (query, positive):
        negative = None
    return TrainRecord(task, query, positive, negative, source, kind)


def read_synthetic(path: str | Path) -> tuple[list[TrainRecord], Counter[str]]:
    """All usable records of ``path`` (a missing or empty file gives none) and a count of skipped
    examples by kind."""
    path = Path(path)
    if not path.exists():
        return [], Counter()
    records, skipped = [], Counter()
    for example in read_jsonl(path):
        record = to_record(example)
        if record is None:
            skipped[str(example.get("kind"))] += 1
        else:
            records.append(record)
    return records, skipped
