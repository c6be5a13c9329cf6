"""Filters for LLM-written records (synthetic and corpus-grounded) beyond the paper's: round-trip consistency
and near-duplicate queries.

An LLM's example can be well-formed JSON and still be a bad pair: a positive about something else, a query the
positive does not answer. **Round trip** (as in InPars and Promptagator): a reference encoder ranks each
record's positive among the positives and hard negatives of all synthetic records of its kind; a record whose
own positive is not within the top ``top_k`` for its query is dropped. A kind with at most ``top_k`` candidates
cannot fail it. **Near duplicates**: a small writer repeats itself in other words; of the records of one kind
whose queries are at least ``similarity`` close in cosine, the first (in file order) is kept.

Both read texts with the reference encoder (plain text, no instruction: the question is whether the pair is
linked, not how the model under training sees it).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from synthembed.data.records import TrainRecord
from synthembed.data.reference import encode_texts
from synthembed.encoder.reference_encoder import near_duplicates


def filter_synthetic(
    records: list[TrainRecord], reference: str, top_k: int | None, similarity: float | None
) -> tuple[list[TrainRecord], dict[str, dict[str, int]]]:
    """The records that pass both filters (``top_k`` / ``similarity`` None: that filter is off), in order, and
    per kind how many were read, failed the round trip, were near duplicates, and were kept."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for number, record in enumerate(records):
        by_kind[record.kind].append(number)
    dropped: dict[int, str] = {}
    if records and (top_k is not None or similarity is not None):
        texts = sorted({text for r in records for text in (r.query, r.positive, r.negative) if text is not None})
        vectors = dict(zip(texts, encode_texts(texts, reference), strict=True))
        for numbers in by_kind.values():
            kind_records = [records[n] for n in numbers]
            if top_k is not None:
                dropped |= {numbers[i]: "inconsistent" for i in inconsistent(kind_records, vectors, top_k)}
            kept = [(n, r) for n, r in zip(numbers, kind_records, strict=True) if n not in dropped]
            if similarity is not None and kept:
                repeats = near_duplicates(np.stack([vectors[r.query] for _, r in kept]), similarity)
                dropped |= {kept[i][0]: "near_duplicate" for i in repeats}
    stats = {}
    for kind, numbers in sorted(by_kind.items()):
        reasons = Counter(dropped[n] for n in numbers if n in dropped)
        stats[kind] = {
            "read": len(numbers),
            "inconsistent": reasons["inconsistent"],
            "near_duplicates": reasons["near_duplicate"],
            "kept": len(numbers) - sum(reasons.values()),
        }
    return [record for number, record in enumerate(records) if number not in dropped], stats


def inconsistent(records: list[TrainRecord], vectors: dict[str, np.ndarray], top_k: int) -> list[int]:
    """Indices of the records whose positive ranks below ``top_k`` among the kind's candidates for its query."""
    candidates = sorted({text for r in records for text in (r.positive, r.negative) if text is not None})
    if len(candidates) <= top_k:
        return []
    matrix = np.stack([vectors[text] for text in candidates])
    failed = []
    for index, record in enumerate(records):
        scores = matrix @ vectors[record.query]
        rank = int((scores > scores[candidates.index(record.positive)]).sum())
        if rank >= top_k:
            failed.append(index)
    return failed
