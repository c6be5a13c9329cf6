"""The prepare stage: synthetic and labeled records mixed, capped, deduplicated and split into
train/validation."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from synthembed.data.contamination import audit, check_contamination
from synthembed.data.filters import filter_synthetic
from synthembed.data.labeled import read_labeled
from synthembed.data.mining import mine_negatives
from synthembed.data.records import TRAIN_FILE, VALIDATION_FILE, TrainRecord
from synthembed.data.synthetic import read_synthetic
from synthembed.errors import UserError
from synthembed.evaluate.run import data_dir
from synthembed.io import write_json, write_jsonl
from synthembed.params import Params, PrepareParams
from synthembed.pipeline.stage import StageResult

CONTAMINATION_FILE = "contamination.json"


def deduplicate(records: list[TrainRecord], seen: set[tuple[str, str, str]]) -> list[TrainRecord]:
    """Drop exact repeats (same task, query and positive; also across sources via ``seen``) and trivial
    pairs."""
    kept = []
    for record in records:
        if record.key() in seen or record.query == record.positive:
            continue
        seen.add(record.key())
        kept.append(record)
    return kept


def split_by_query(
    records: list[TrainRecord], fraction: float, rng: random.Random
) -> tuple[list[TrainRecord], list[TrainRecord]]:
    """Hold out ``fraction`` of the distinct queries, so no query is seen in both train and validation."""
    queries = sorted({record.query for record in records})
    rng.shuffle(queries)
    held = set(queries[: int(round(fraction * len(queries)))]) if len(queries) > 1 else set()
    return [r for r in records if r.query not in held], [r for r in records if r.query in held]


def weigh(records: list[TrainRecord], weight: float, cap: int | None, rng: random.Random) -> list[TrainRecord]:
    """``weight`` < 1 subsamples, > 1 repeats records; ``cap`` bounds the result."""
    target = int(round(weight * len(records)))
    if cap is not None:
        target = min(target, cap)
    shuffled = rng.sample(records, len(records))
    repeated = shuffled * (target // len(shuffled) + 1) if shuffled else []
    return repeated[:target]


def nothing_to_train(params: PrepareParams) -> UserError:
    return UserError(f"no training records: {params.synthetic} holds no usable examples and prepare.labeled adds none")


def audit_sources(config: Params, records: list[TrainRecord]) -> dict[str, Any]:
    """The contamination report of every record against the evaluation tasks, written to
    ``output_dir/contamination.json`` before the limit is checked, so a stopped run keeps the whole list."""
    params = config.prepare
    cache = Path(config.evaluate.cache_dir) if config.evaluate.cache_dir else None
    report = audit(
        records,
        data_dir(config),
        ngram=params.contamination_ngram,
        similarity=params.contamination_similarity,
        cache_dir=cache,
    )
    write_json(Path(params.output_dir) / CONTAMINATION_FILE, report)
    check_contamination(report, params.contamination_limit)
    return report


def run_prepare(config: Params) -> StageResult:
    """Write ``train.jsonl`` and ``validation.jsonl`` under ``prepare.output_dir``; return the metrics."""
    params = config.prepare
    rng = random.Random(config.seed)
    synthetic, skipped = read_synthetic(params.synthetic)
    sources: list[tuple[str, list[TrainRecord], float]] = [("synthetic", synthetic, params.synthetic_weight)]
    for path in params.labeled:
        if not Path(path).exists():
            raise UserError(f"labeled set {path} not found (prepare.labeled)")
        sources.append((Path(path).stem, read_labeled(path), params.labeled_weight))
    everything = [record for _, records, _ in sources for record in records]
    if not everything:
        raise nothing_to_train(params)
    contamination = audit_sources(config, everything)

    seen: set[tuple[str, str, str]] = set()
    train: list[TrainRecord] = []
    validation: list[TrainRecord] = []
    per_source: dict[str, dict[str, Any]] = {}
    for name, records, weight in sources:
        unique = deduplicate(records, seen)
        duplicates = len(records) - len(unique)
        mining: dict[str, float] = {}
        filtered: dict[str, dict[str, int]] = {}
        if name == "synthetic":
            unique, filtered = filter_synthetic(
                unique, params.consistency_encoder, params.consistency_top_k, params.near_duplicate_similarity
            )
        elif params.mine_negatives:
            unique, mining = mine_negatives(unique, params)
        capped = weigh(unique, min(weight, 1.0), params.max_per_source, rng)
        source_train, source_validation = split_by_query(capped, params.validation_fraction, rng)
        source_train = weigh(source_train, max(weight, 1.0), None, rng) if weight > 1 else source_train
        train += source_train
        validation += source_validation
        per_source[name] = {
            "read": len(records),
            "duplicates": duplicates,
            "mining": mining,
            "filters": filtered,
            "train": len(source_train),
            "validation": len(source_validation),
        }
    if not train:
        raise nothing_to_train(params)
    rng.shuffle(train)
    out = Path(params.output_dir)
    write_jsonl(out / TRAIN_FILE, (record.to_json() for record in train))
    write_jsonl(out / VALIDATION_FILE, (record.to_json() for record in validation))
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for split, records in (("train", train), ("validation", validation)):
        for record in records:
            kinds[record.kind][split] += 1
    metrics = {
        "train": len(train),
        "validation": len(validation),
        "with_negative": sum(record.negative is not None for record in train),
        "sources": per_source,
        "kinds": {kind: {"train": c["train"], "validation": c["validation"]} for kind, c in sorted(kinds.items())},
        "skipped_synthetic": dict(sorted(skipped.items())),
        "contamination": {key: value for key, value in contamination.items() if key != "flagged_queries"},
    }
    summary = (
        f"prepared {metrics['train']} training and {metrics['validation']} validation records "
        f"({metrics['with_negative']} with a hard negative) in {out}"
    )
    return StageResult(metrics, summary)
