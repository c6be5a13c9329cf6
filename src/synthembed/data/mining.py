"""Hard-negative mining for labeled sets that ship without negatives (as the paper did with mE5).

Every query is ranked against the set's own documents under a reference encoder. Its positives are removed,
then the first ``skip_top`` remaining ranks are skipped: unjudged documents that score that high are often
relevant too (false negatives), and training to push them away hurts.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from synthembed.data.records import TrainRecord
from synthembed.params import ModelParams

MINER_MAX_SEQ_LENGTH = 256


def mine_negatives(records: list[TrainRecord], miner: str, skip_top: int) -> list[TrainRecord]:
    """Fill ``negative`` where it is missing; records that already have one are returned unchanged."""
    todo = [i for i, record in enumerate(records) if record.negative is None]
    if not todo:
        return records
    from synthembed.encoder import Embedder

    documents = sorted({record.positive for record in records})
    doc_index = {doc: i for i, doc in enumerate(documents)}
    positives: dict[str, set[int]] = {}
    for record in records:
        positives.setdefault(record.query, set()).add(doc_index[record.positive])
    queries = sorted({records[i].query for i in todo})
    embedder = Embedder.load(miner, ModelParams(max_seq_length=MINER_MAX_SEQ_LENGTH, dtype="fp32"))
    doc_vectors = embedder.encode(documents, show_progress=len(documents) > 256)
    query_vectors = embedder.encode(queries, show_progress=len(queries) > 256)
    chosen = {}
    for query, ranking in zip(queries, np.argsort(-(query_vectors @ doc_vectors.T), axis=1), strict=True):
        candidates = [int(d) for d in ranking if int(d) not in positives[query]]
        if candidates:
            chosen[query] = documents[candidates[min(skip_top, len(candidates) - 1)]]
    out = list(records)
    for i in todo:
        out[i] = replace(records[i], negative=chosen.get(records[i].query))
    return out
