"""The prepare stage: synthetic examples, corpus-grounded records and labeled sets mixed, capped, deduplicated
and split into train/validation.

Per source, in this order: exact repeats dropped; LLM-written pairs (synthetic, grounded) through the round-trip
and near-duplicate filters; pairs without a negative (grounded, labeled) given mined hard negatives; the weight
applied; a share of its queries held out for validation. The contamination audit reads every record first.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class Source:
    """One input of the stage: its records, its weight, and whether an LLM wrote them (those are filtered)."""

    name: str
    records: list[TrainRecord]
    weight: float
    written: bool
    skipped: Counter[str] = field(default_factory=Counter)  # unusable lines by reason (synthetic examples)


def nothing_to_train(params: PrepareParams) -> UserError:
    return UserError(
        f"no training records: {params.synthetic} holds no usable examples and prepare.grounded and "
        "prepare.labeled add none (or every source has weight 0)"
    )


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


def read_sources(params: PrepareParams) -> list[Source]:
    """The synthetic examples, the corpus-grounded records and each labeled set, with their weights."""
    synthetic, skipped = read_synthetic(params.synthetic)
    sources = [Source("synthetic", synthetic, params.synthetic_weight, written=True, skipped=skipped)]
    if params.grounded is not None:
        if not Path(params.grounded).exists():
            raise UserError(
                f"{params.grounded} not found (prepare.grounded): run `synthembed generate` with generate.corpus "
                "set, or set prepare.grounded to null"
            )
        grounded = [replace(record, kind="grounded") for record in read_labeled(params.grounded)]
        sources.append(Source("grounded", grounded, params.grounded_weight, written=True))
    for path in params.labeled:
        if not Path(path).exists():
            raise UserError(f"labeled set {path} not found (prepare.labeled)")
        sources.append(Source(Path(path).stem, read_labeled(path), params.labeled_weight, written=False))
    return sources


def run_prepare(config: Params) -> StageResult:
    """Write ``train.jsonl`` and ``validation.jsonl`` under ``prepare.output_dir``; return the metrics."""
    params = config.prepare
    rng = random.Random(config.seed)
    sources = read_sources(params)
    everything = [record for source in sources for record in source.records]
    if not everything:
        raise nothing_to_train(params)
    contamination = audit_sources(config, everything)

    seen: set[tuple[str, str, str]] = set()
    train: list[TrainRecord] = []
    validation: list[TrainRecord] = []
    per_source: dict[str, dict[str, Any]] = {}
    for source in sources:
        unique = deduplicate(source.records, seen)
        duplicates = len(source.records) - len(unique)
        mining: dict[str, float] = {}
        filtered: dict[str, dict[str, int]] = {}
        if source.written:  # the LLM wrote (part of) each pair: keep only pairs the reference encoder links
            unique, filtered = filter_synthetic(
                unique, params.consistency_encoder, params.consistency_top_k, params.near_duplicate_similarity
            )
        if params.mine_negatives and source.name != "synthetic":  # synthetic kinds bring theirs or train without
            unique, mining = mine_negatives(unique, params)
        capped = weigh(unique, min(source.weight, 1.0), params.max_per_source, rng)
        source_train, source_validation = split_by_query(capped, params.validation_fraction, rng)
        if source.weight > 1:
            source_train = weigh(source_train, source.weight, None, rng)
        train += source_train
        validation += source_validation
        per_source[source.name] = {
            "read": len(source.records),
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
        "skipped_synthetic": dict(sorted(sources[0].skipped.items())),
        "contamination": {key: value for key, value in contamination.items() if key != "flagged_queries"},
    }
    summary = (
        f"prepared {metrics['train']} training and {metrics['validation']} validation records "
        f"({metrics['with_negative']} with a hard negative) in {out}"
    )
    return StageResult(metrics, summary)
