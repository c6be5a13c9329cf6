"""prepare: the paper's per-kind mapping, mixing, dedup, split, mining, and no SciFact test
leakage."""

from __future__ import annotations

import io
import json
import zipfile
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
    values = dict(synthetic=str(tmp_path / "examples.jsonl"), labeled=[], mine_negatives=False,
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
        "mined_negatives": 0,
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


def test_mined_negative_skips_top_ranks_and_never_a_positive(minilm_dir: Path) -> None:
    docs = [
        "The Eiffel Tower is in Paris, France.",
        "Paris is the capital of France and its largest city.",
        "Lyon is a large French city known for its food.",
        "France borders Spain, Italy, Germany and Belgium.",
        "Photosynthesis converts light into chemical energy.",
        "Mitochondria produce ATP in eukaryotic cells.",
    ]
    records = [TrainRecord("Find facts", "What is the capital of France?", docs[1], None, "s", "labeled")]
    records += [TrainRecord("Find facts", f"question {i}", doc, None, "s", "labeled") for i, doc in enumerate(docs)]
    records[2] = TrainRecord("Find facts", "What is the capital of France?", docs[0], None, "s", "labeled")
    top = mine_negatives(records, str(minilm_dir), skip_top=0)[0].negative
    skipped = mine_negatives(records, str(minilm_dir), skip_top=2)[0].negative
    assert top not in (docs[0], docs[1]) and skipped not in (docs[0], docs[1])
    assert "France" in top and top != skipped  # the closest non-positive is French; skipping moves further down


def _scifact_test_claims() -> set[str]:
    """SciFact test queries from the evaluation copy in data/ when present, else from the source zip."""
    claims: set[str] = set()
    for path in (REPO / "data").glob("eval*/**/*queries*.jsonl*"):
        if "scifact" in str(path).lower():
            claims |= {json.loads(line)["text"].strip() for line in path.read_text().splitlines() if line.strip()}
    zip_path = REPO.parent / "shared" / "data" / "scifact" / "source" / "scifact.zip"
    if zip_path.exists():
        import csv

        with zipfile.ZipFile(zip_path) as archive:
            for split in ("validation", "test"):  # SciFact validation = BEIR/MTEB test
                rows = csv.DictReader(io.TextIOWrapper(archive.open(f"claims_{split}.csv"), encoding="utf-8"))
                claims |= {row["claim"].strip() for row in rows}
    return claims


def test_scifact_labeled_set_has_no_test_queries() -> None:
    records = read_labeled(SCIFACT)
    assert len(records) == 912 and all(r.negative is None and r.source == "scifact_train" for r in records)
    test_claims = _scifact_test_claims()
    if not test_claims:
        pytest.skip("no SciFact test queries available to compare against")
    assert len(test_claims) >= 300
    assert not {r.query for r in records} & test_claims


def test_prepare_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from synthembed.cli import app

    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "examples.jsonl", EXAMPLES)
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  synthetic: examples.jsonl\n  labeled: []\n  validation_fraction: 0\n")
    result = CliRunner().invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "prepared 6 training and 0 validation records (4 with a hard negative)" in result.output
    params.write_text("prepare:\n  synthetic: examples.jsonl\n  labeled: [nope.jsonl]\n")
    result = CliRunner().invoke(app, ["prepare", "--params", str(params)])
    assert result.exit_code == 2 and "error: labeled set nope.jsonl not found" in result.output
