"""prepare: the paper's per-kind mapping, mixing, dedup, split, mining, and no SciFact test
leakage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthembed.data.labeled import read_labeled
from synthembed.data.mining import mine_negatives
from synthembed.data.prepare import run_prepare
from synthembed.data.records import TrainRecord, read_records
from synthembed.data.synthetic import BITEXT_INSTRUCTION, STS_INSTRUCTION, to_record
from synthembed.errors import UserError
from synthembed.io import write_jsonl
from synthembed.params import Params, PrepareParams
from synthembed.pipeline.run import run_stage

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO / "data" / "labeled" / "scifact_train.jsonl"

EXAMPLES = [
    {"kind": "short_long", "task": "Retrieve recipes for a dish", "language": "English", "params": {}, "model": "m",  # noqa: E501
     "data": {"user_query": "vegan lasagna", "positive_document": "Layer pasta with spinach and cashew ricotta.",  # noqa: E501
              "hard_negative_document": "Classic lasagna uses beef ragu and bechamel."}},
    {"kind": "long_short", "task": "Classify the sentiment of a review", "language": "English", "params": {},
     "model": "m", "data": {"input_text": "The battery died after two days and support never answered.",
                            "label": "negative", "misleading_label": "positive"}},
    {"kind": "short_short", "task": "Find the capital of a country", "language": "English", "params": {},
     "model": "m", "data": {"input": "France", "positive_document": "Paris"}},
    {"kind": "long_long", "task": "Find the paper a review discusses", "language": "English", "params": {},
     "model": "m", "data": {"input": "A long review of transformers ...", "positive_document": "Attention is all..."}},  # noqa: E501
    {"kind": "sts", "task": "", "language": "English", "params": {}, "model": "m",
     "data": {"S1": "A man plays a guitar.", "S2": "Someone is playing a guitar.", "S3": "A man sells a guitar."}},  # noqa: E501
    {"kind": "bitext", "language": "German", "params": {}, "model": "m",
     "data": {"S1": "Good morning", "S2": "Guten Morgen", "S3": "Guten Abend"}},
]  # fmt: skip


def test_each_kind_maps_to_query_positive_negative() -> None:
    records = {example["kind"]: to_record(example) for example in EXAMPLES}
    assert records["short_long"] == TrainRecord(
        "Retrieve recipes for a dish", "vegan lasagna", "Layer pasta with spinach and cashew ricotta.",
        "Classic lasagna uses beef ragu and bechamel.", "synthetic", "short_long",
    )  # fmt: skip
    long_short = records["long_short"]
    assert (long_short.query, long_short.positive, long_short.negative) == (
        "The battery died after two days and support never answered.", "negative", "positive",
    )  # fmt: skip
    for kind in ("short_short", "long_long"):  # the paper drops their hard negative: in-batch only
        assert (
            records[kind].negative is None
            and records[kind].query == EXAMPLES[2 if kind == "short_short" else 3]["data"]["input"]
        )
    sts, bitext = records["sts"], records["bitext"]
    assert (sts.instruction, sts.query, sts.positive, sts.negative) == (
        STS_INSTRUCTION, "A man plays a guitar.", "Someone is playing a guitar.", "A man sells a guitar.",
    )  # fmt: skip
    assert (bitext.instruction, bitext.positive, bitext.negative) == (
        BITEXT_INSTRUCTION,
        "Guten Morgen",
        "Guten Abend",
    )


@pytest.mark.parametrize(
    "example",
    [
        {"kind": "short_long", "task": "t", "data": {"user_query": "q", "positive_document": "p"}},
        {
            "kind": "long_short",
            "task": "t",
            "data": {"input_text": "x", "label": " ", "misleading_label": "y"},
        },
        {"kind": "poem", "task": "t", "data": {"input": "q", "positive_document": "p"}},
        {"kind": "short_short", "data": {"input": "q", "positive_document": "p"}},
        {"kind": "sts", "data": "not an object"},
    ],
)
def test_incomplete_examples_are_skipped(example: dict) -> None:
    assert to_record(example) is None


def _config(tmp_path: Path, **prepare: object) -> Params:
    values = dict(synthetic=str(tmp_path / "examples.jsonl"), grounded=None, labeled=[], mine_negatives=False,
                  output_dir=str(tmp_path / "train"))  # fmt: skip
    values.update(prepare)
    return Params(prepare=PrepareParams(**values))


def test_prepare_writes_splits_and_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "examples.jsonl", EXAMPLES + [EXAMPLES[0], {"kind": "sts", "data": {}}])
    labeled = tmp_path / "qa.jsonl"
    write_jsonl(labeled, [{"instruction": "Answer", "query": f"q{i}", "positive": f"p{i}"} for i in range(20)])
    config = _config(tmp_path, labeled=[str(labeled)], validation_fraction=0.2)
    metrics = run_stage("prepare", config, track=False).metrics
    train, validation = (
        read_records(tmp_path / "train" / "train.jsonl"),
        read_records(tmp_path / "train" / "validation.jsonl"),
    )
    assert metrics["train"] == len(train) and metrics["validation"] == len(validation)
    assert metrics["sources"]["synthetic"]["duplicates"] == 1 and metrics["skipped_synthetic"] == {"sts": 1}
    assert metrics["sources"]["qa"] == {
        "read": 20,
        "duplicates": 0,
        "mining": {},  # mine_negatives is off
        "filters": {},  # labeled sets are not filtered
        "train": 16,
        "validation": 4,
    }
    assert set(metrics["kinds"]) == {
        "short_long",
        "long_short",
        "short_short",
        "long_long",
        "sts",
        "bitext",
        "labeled",
    }
    assert not {r.query for r in train} & {r.query for r in validation}
    assert len({r.key() for r in train + validation}) == len(train) + len(validation)
    assert json.loads((tmp_path / "metrics" / "prepare.json").read_text()) == metrics


def test_weights_and_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    labeled = tmp_path / "qa.jsonl"
    write_jsonl(labeled, [{"instruction": "Answer", "query": f"q{i}", "positive": f"p{i}"} for i in range(10)])
    config = _config(tmp_path, labeled=[str(labeled)], validation_fraction=0.0, labeled_weight=2.0)
    assert run_prepare(config).metrics["sources"]["qa"]["train"] == 20
    config.prepare.max_per_source, config.prepare.labeled_weight = 4, 1.0
    assert run_prepare(config).metrics["sources"]["qa"]["train"] == 4
    config.prepare.labeled_weight = 0.5
    config.prepare.max_per_source = None
    assert run_prepare(config).metrics["sources"]["qa"]["train"] == 5


def test_empty_synthetic_file_and_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples.jsonl").write_text("")
    one = tmp_path / "one.jsonl"
    write_jsonl(one, [{"instruction": "Answer", "query": "q", "positive": "p"}])
    assert run_prepare(_config(tmp_path, labeled=[str(one)])).metrics["train"] == 1
    with pytest.raises(UserError, match="no training records"):
        run_prepare(_config(tmp_path))
    with pytest.raises(UserError, match="not found"):
        run_prepare(_config(tmp_path, labeled=[str(tmp_path / "missing.jsonl")]))
    write_jsonl(one, [{"instruction": "Answer", "query": "q"}])
    with pytest.raises(UserError, match="record 1 lacks positive"):
        read_labeled(one)


DOCS = [
    "The Eiffel Tower is in Paris, France.",
    "Paris is the capital of France and its largest city.",
    "Lyon is a large French city known for its food.",
    "France borders Spain, Italy, Germany and Belgium.",
    "Photosynthesis converts light into chemical energy.",
    "Mitochondria produce ATP in eukaryotic cells.",
]
CAPITAL = "What is the capital of France?"


def _mining(minilm_dir: Path, **values: object) -> PrepareParams:
    return PrepareParams(negative_miner=str(minilm_dir), negative_corpus=None, negative_margin=None, **values)


def _capital_records() -> list[TrainRecord]:
    """Two positives for the capital question (one in a record that already has a negative), six other
    queries whose positives make up the corpus."""
    records = [TrainRecord("Find facts", f"question {i}", doc, None, "s", "labeled") for i, doc in enumerate(DOCS)]
    records.append(TrainRecord("Find facts", CAPITAL, DOCS[1], None, "s", "labeled"))
    records.append(TrainRecord("Find facts", CAPITAL, DOCS[0], "Rome is in Italy.", "s", "labeled"))
    return records


def test_mined_negative_skips_top_ranks_and_never_a_positive(minilm_dir: Path) -> None:
    records = _capital_records()
    top, stats = mine_negatives(records, _mining(minilm_dir, negative_rank_min=0))
    skipped, _ = mine_negatives(records, _mining(minilm_dir, negative_rank_min=1))
    (capital,) = [r for r in top if r.query == CAPITAL and r.negative != "Rome is in Italy."]
    (capital_skipped,) = [r for r in skipped if r.query == CAPITAL and r.negative != "Rome is in Italy."]
    assert capital.negative not in DOCS[:2] and capital_skipped.negative not in DOCS[:2]  # both positives excluded
    assert "Fran" in capital.negative and capital.negative != capital_skipped.negative  # the closest, then further
    assert [r.negative for r in top if r.query == CAPITAL].count("Rome is in Italy.") == 1  # kept as it was
    assert stats == {"corpus": 6, "pairs": 7, "pairs_with_negative": 7, "negatives": 7}


def test_mining_takes_the_corpus_several_negatives_and_a_margin(minilm_dir: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, [{"_id": "x", "title": "Capitals", "text": "The capital city of France is a large city."}])
    records = _capital_records()
    grounded, stats = mine_negatives(records, _mining(minilm_dir, negative_rank_min=0).model_copy(
        update={"negative_corpus": str(corpus)}))  # fmt: skip
    assert stats["corpus"] == 7
    assert [r.negative for r in grounded if r.query == CAPITAL][
        0
    ] == "Capitals The capital city of France is a large city."
    several, stats = mine_negatives(records, _mining(minilm_dir, negative_rank_min=0, negatives_per_query=2))
    negatives = [r.negative for r in several if r.query == CAPITAL and r.positive == DOCS[1]]
    assert len(negatives) == 2 == len(set(negatives)) and stats["negatives"] == 14
    strict, stats = mine_negatives(records, _mining(minilm_dir).model_copy(update={"negative_margin": 0.9}))
    assert stats["pairs_with_negative"] < stats["pairs"] == 7  # a candidate within the margin is no negative
    assert len(strict) == len(records) and any(r.negative is None for r in strict)  # such a pair is kept


def test_synthetic_filters_drop_unlinked_pairs_and_near_duplicate_queries(minilm_dir: Path) -> None:
    from synthembed.data.filters import filter_synthetic

    def pair(query: str, positive: str, kind: str = "short_long") -> TrainRecord:
        return TrainRecord("Find a document", query, positive, None, "synthetic", kind)

    records = [
        pair("how do I bake sourdough bread", "Feed the starter, mix flour and water, proof overnight, then bake."),
        pair("symptoms of the flu", "Influenza brings fever, cough, sore throat and aching muscles."),
        pair("what do cats eat", "Filing a tax return: deductions, brackets and the deadline in April."),  # unlinked
        pair("how to change a car tyre", "Loosen the wheel nuts, jack up the car and swap in the spare."),
        pair("how do I bake sourdough bread?", "Sourdough needs a lively starter and a long, cool rise."),  # repeat
        pair("what do cats eat", "Cats are carnivores and need meat.", kind="short_short"),  # another kind
    ]
    kept, stats = filter_synthetic(records, str(minilm_dir), top_k=2, similarity=0.95)
    assert kept == [records[i] for i in (0, 1, 3, 5)]
    assert stats["short_long"] == {"read": 5, "inconsistent": 1, "near_duplicates": 1, "kept": 3}
    assert stats["short_short"] == {"read": 1, "inconsistent": 0, "near_duplicates": 0, "kept": 1}
    everything, stats = filter_synthetic(records, str(minilm_dir), top_k=None, similarity=None)
    assert everything == records and stats["short_long"]["kept"] == 5  # both filters off


def test_grounded_records_are_filtered_mined_and_weighted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    grounded = tmp_path / "grounded.jsonl"
    questions = [
        "where is the Eiffel Tower",
        "which city is the capital of France",
        "how to file a tax return",  # written for DOCS[2] (Lyon) and linked to none of the documents: dropped
        "which countries border France",
        "how do plants turn light into energy",
        "how do cells make ATP",
    ]
    rows = [{"instruction": "Find the fact", "query": q, "positive": d, "kind": "grounded_short_long", "doc_id": str(i)}
            for i, (q, d) in enumerate(zip(questions, DOCS, strict=True))]  # fmt: skip
    write_jsonl(grounded, rows)
    config = _config(tmp_path, grounded=str(grounded), mine_negatives=True, validation_fraction=0.0,
                     negative_miner=str(minilm_dir), negative_corpus=None, negative_rank_min=0,
                     consistency_encoder=str(minilm_dir), consistency_top_k=1,
                     contamination_limit=len(DOCS))  # short DOCS are STS test sentences  # fmt: skip
    metrics = run_prepare(config).metrics
    source = metrics["sources"]["grounded"]
    assert source["filters"]["grounded"]["inconsistent"] == 1 and source["read"] == len(DOCS)
    kept = source["filters"]["grounded"]["kept"]
    assert source["mining"]["pairs"] == kept == source["train"] and metrics["kinds"]["grounded"]["train"] == kept
    train = read_records(tmp_path / "train" / "train.jsonl")
    assert "how to file a tax return" not in {r.query for r in train}
    assert all(r.kind == "grounded" and r.negative and r.negative != r.positive for r in train)

    config.prepare.grounded_weight = 0.0  # the data ablation's switch: the source is read, none of it trains
    with pytest.raises(UserError, match="every source has weight 0"):
        run_prepare(config)
    config.prepare.grounded = str(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match=r"missing.jsonl not found \(prepare.grounded\): run `synthembed generate`"):
        run_prepare(config)


def test_a_mining_window_narrower_than_the_negatives_asked_for_is_refused() -> None:
    for window in (
        {"negative_rank_min": 5, "negative_rank_max": 5},
        {"negatives_per_query": 4, "negative_rank_max": 6},
    ):
        with pytest.raises(ValueError, match="hold fewer candidates than negatives_per_query"):
            PrepareParams(**window)


def _scifact_test_claims() -> set[str]:
    """SciFact's test queries, from the evaluation copy (the BEIR/MTEB test split)."""
    path = REPO / "data" / "eval" / "scifact" / "queries.jsonl"
    return {json.loads(line)["text"].strip() for line in path.read_text().splitlines() if line.strip()}


def test_scifact_labeled_set_has_no_test_queries() -> None:
    records = read_labeled(SCIFACT)
    assert len(records) == 793 and all(r.negative is None and r.source == "scifact_train" for r in records)
    test_claims = _scifact_test_claims()
    assert len(test_claims) >= 300
    assert not {r.query for r in records} & test_claims


@pytest.mark.slow
def test_the_contamination_audit_passes_the_shipped_labeled_set(tmp_path: Path) -> None:
    """The shipped set passes prepare's default audit (its build drops what the audit flags); SciFact's claim
    twins, the leak the build removed, are flagged when put back."""
    from synthembed.data.contamination import audit, check_contamination

    defaults = PrepareParams()
    records = read_labeled(SCIFACT)
    settings = dict(ngram=defaults.contamination_ngram, similarity=defaults.contamination_similarity)
    report = audit(records, REPO / "data" / "eval", cache_dir=tmp_path, **settings)
    assert report["flagged"]["any"] == 0 and report["records"] == 793
    check_contamination(report, defaults.contamination_limit)
    twin = TrainRecord(records[0].instruction, "A deficiency of vitamin B12 decreases blood levels of homocysteine.",
                       records[0].positive, None, "scifact_train", "labeled")  # fmt: skip
    report = audit([*records, twin], REPO / "data" / "eval", cache_dir=tmp_path, tasks=["SciFact"], **settings)
    assert report["flagged_queries"] == [twin.query]


def test_prepare_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from synthembed.cli import app

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "examples.jsonl", EXAMPLES)
    params = tmp_path / "params.yaml"
    params.write_text(
        "prepare:\n  synthetic: examples.jsonl\n  grounded: null\n  labeled: []\n  validation_fraction: 0\n"
    )
    result = CliRunner().invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "prepared 6 training and 0 validation records (4 with a hard negative)" in result.output
    params.write_text("prepare:\n  synthetic: examples.jsonl\n  grounded: null\n  labeled: [nope.jsonl]\n")
    result = CliRunner().invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 2 and "error: labeled set nope.jsonl not found" in result.output
