"""Hard negatives for labeled sets that ship without them, mined as the paper did: from the top ranks of a
reference encoder over the corpus the documents come from.

sentence-transformers' ``mine_hard_negatives`` does the ranking. Every query's own positives (all of them, when a
query has several) are excluded; the candidates are the ranks ``rank_min``..``rank_max`` below them, and a
candidate scoring within ``margin`` (relative) of the positive is dropped: unjudged documents that close to the
query are often relevant too (false negatives), and training to push them away hurts. A query left without a
candidate keeps no negative and trains on in-batch negatives only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from synthembed.corpus import read_corpus
from synthembed.data.records import TrainRecord
from synthembed.encoder.reference_encoder import load_reference
from synthembed.params import PrepareParams

# The library's own embedding cache, one folder per miner fingerprint (its file names hash only the texts), so
# the corpus is embedded once per miner, not on every run of the stage.
MINING_CACHE_DIR = Path(".cache/mining")


def mine_negatives(records: list[TrainRecord], params: PrepareParams) -> tuple[list[TrainRecord], dict[str, float]]:
    """Records with a mined negative where they had none (``negatives_per_query`` records per query and
    positive, one negative each), and statistics of the mining. Records that already have one are kept as
    they are."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    todo = [record for record in records if record.negative is None]
    if not todo:
        return records, {}
    corpus = sorted({record.positive for record in records})
    if params.negative_corpus is not None:
        corpus = sorted(set(corpus) | {document.content for document in read_corpus(params.negative_corpus)})
    miner = load_reference(params.negative_miner)
    # Every record's positive counts as its query's, also where the record already has a negative.
    pairs = Dataset.from_dict({"query": [r.query for r in records], "positive": [r.positive for r in records]})
    mined = mine_hard_negatives(
        pairs,
        miner.model,
        corpus=corpus,
        range_min=params.negative_rank_min,
        range_max=params.negative_rank_max,
        relative_margin=params.negative_margin,
        num_negatives=params.negatives_per_query,
        sampling_strategy="top",
        output_format="triplet",
        batch_size=miner.batch_size,
        cache_folder=str(MINING_CACHE_DIR / miner.fingerprint()),
        verbose=False,
    )
    negatives: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in mined:
        negatives[(row["query"], row["positive"])].append(row["negative"])
    out = []
    for record in records:
        found = negatives.get((record.query, record.positive), []) if record.negative is None else []
        out += [replace(record, negative=negative) for negative in found] or [record]
    stats = {
        "corpus": len(corpus),
        "pairs": len(todo),
        "pairs_with_negative": sum((r.query, r.positive) in negatives for r in todo),
        "negatives": sum(len(negatives.get((r.query, r.positive), [])) for r in todo),
    }
    return out, stats
