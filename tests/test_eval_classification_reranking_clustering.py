"""Bundled classification, reranking and clustering tasks on their real files: sizes, MTEB's protocol, seeded caps,
one-line errors for broken files, and (slow) all-MiniLM-L6-v2's scores against MTEB's published ones."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.errors import UserError
from synthembed.evaluate.tasks import SubsetSizes, build_task

DATA = Path(__file__).resolve().parents[1] / "data" / "eval"
CLASSIFICATION = [
    "EmotionClassification",
    "AmazonCounterfactualClassification",
    "TweetSentimentExtractionClassification",
]
CLUSTERING = ["RedditClustering", "StackExchangeClustering"]
FOLDERS = {
    "EmotionClassification": "emotion",
    "AmazonCounterfactualClassification": "amazon_counterfactual",
    "TweetSentimentExtractionClassification": "tweet_sentiment_extraction",
    "WikiQA": "wikiqa",
    "RedditClustering": "reddit_clustering",
    "StackExchangeClustering": "stackexchange_clustering",
}


def loaded(name: str, sizes: SubsetSizes | None = None):
    task = build_task(name, DATA, sizes or SubsetSizes())
    task.load_data()
    return task


def evaluated_items(name: str, task) -> list:
    """What a cap subsamples: the test texts, the questions, or the titles of every clustering set."""
    if name == "WikiQA":
        return list(task.dataset["default"]["test"]["queries"]["text"])
    if name in CLUSTERING:
        return list(task.dataset["test"]["sentences"])
    split = task.dataset["en"] if name == "AmazonCounterfactualClassification" else task.dataset
    return list(split["test"]["text"])


def test_classification_builders_read_their_files_with_mteb_protocol() -> None:
    sizes, protocol = {}, {}
    for name in CLASSIFICATION:
        task = loaded(name)
        split = task.dataset["en"] if name == "AmazonCounterfactualClassification" else task.dataset
        sizes[name] = {part: (len(rows), len(set(rows["label"]))) for part, rows in split.items()}
        protocol[name] = (task.samples_per_label, task.n_experiments, task.eval_splits, task.hf_subsets)
        assert task.metadata.main_score == "accuracy" and task.subset is None
    assert sizes == {
        "EmotionClassification": {"train": (16000, 6), "test": (2000, 6)},
        "AmazonCounterfactualClassification": {"train": (4018, 2), "test": (670, 2)},
        "TweetSentimentExtractionClassification": {"train": (27481, 3), "test": (3534, 3)},
    }
    assert protocol == {  # MTEB's own classes: training examples per label, experiments; the bundled split
        "EmotionClassification": (16, 10, ["test"], ["default"]),
        "AmazonCounterfactualClassification": (32, 10, ["test"], ["en"]),
        "TweetSentimentExtractionClassification": (32, 10, ["test"], ["default"]),
    }
    emotion = loaded("EmotionClassification").dataset["test"]
    assert emotion[0] == {"text": "im feeling rather rotten so im not very ambitious right now", "label": 0}  # sadness


@pytest.mark.parametrize("name", [*CLASSIFICATION, "Banking77Classification"])
def test_classification_copies_match_mteb_descriptive_statistics(name: str) -> None:
    """Row and label counts, unique texts and text lengths equal what MTEB records of its own copy."""
    import mteb

    task = loaded(name)
    reference = mteb.get_task(name).metadata.descriptive_stats
    for split, rows in (task.dataset["en"] if "en" in task.dataset else task.dataset).items():
        stats = reference[split]
        stats = stats["hf_subset_descriptive_stats"]["en"] if "hf_subset_descriptive_stats" in stats else stats
        lengths = [len(text) for text in rows["text"]]
        ours = (len(rows), sum(lengths), min(lengths), max(lengths), len(set(rows["text"])))
        text = stats["text_statistics"]
        assert ours == (
            stats["num_samples"],
            text["total_text_length"],
            text["min_text_length"],
            text["max_text_length"],
            text["unique_texts"],
        )
        counts = sorted(Counter(rows["label"]).values())  # Banking77's ids are our own (sorted names), so no ids
        assert counts == sorted(value["count"] for value in stats["label_statistics"]["labels"].values())


def test_wikiqa_reranks_each_answered_questions_own_candidates() -> None:
    task = loaded("WikiQA")
    split = task.dataset["default"]["test"]
    assert task.metadata.type == "Reranking" and task.metadata.main_score == "map_at_1000" and task.subset is None
    assert (len(split["queries"]), len(split["corpus"])) == (243, 2310)
    assert set(split["top_ranked"]) == set(split["relevant_docs"]) == set(split["queries"]["id"])
    assert all(set(split["top_ranked"][q]) == set(judged) for q, judged in split["relevant_docs"].items())
    assert all(any(judged.values()) for judged in split["relevant_docs"].values())
    assert sum(map(len, split["top_ranked"].values())) == 2351


@pytest.mark.parametrize(("name", "titles"), [("RedditClustering", 5055), ("StackExchangeClustering", 5972)])
def test_clustering_builders_read_their_sets(name: str, titles: int) -> None:
    task = loaded(name)
    sets = task.dataset["test"]
    assert task.metadata.main_score == "v_measure" and task.subset is None
    assert len(sets) == 5 and sum(map(len, sets["sentences"])) == titles
    assert all(10 <= len(set(labels)) <= 50 for labels in sets["labels"])
    assert "Not MTEB's 25 sets" in task.metadata.description and "seed 42" in task.metadata.description


@pytest.mark.parametrize("name", list(FOLDERS))
def test_a_cap_subsamples_deterministically_and_records_the_subset(name: str) -> None:
    full = evaluated_items(name, loaded(name))
    capped = loaded(name, SubsetSizes(max_queries=40, seed=1))
    again = evaluated_items(name, loaded(name, SubsetSizes(max_queries=40, seed=1)))
    other = evaluated_items(name, loaded(name, SubsetSizes(max_queries=40, seed=2)))
    items = evaluated_items(name, capped)
    assert items == again and items != other
    if name in CLUSTERING:
        assert [len(titles) for titles in items] == [40] * len(full)
        assert all(set(kept) <= set(titles) for kept, titles in zip(items, full, strict=True))
        assert capped.subset == {"n_queries": 40 * len(full)}
    else:
        assert len(items) == 40 and set(items) <= set(full)
        assert capped.subset is not None and capped.subset["n_queries"] == 40
    if name == "WikiQA":
        split = capped.dataset["default"]["test"]
        assert (
            capped.subset["n_documents"]
            == len(split["corpus"])
            == len({d for q in split["top_ranked"].values() for d in q})
        )
    assert loaded(name, SubsetSizes(max_queries=10**6)).subset is None


def rewrite(path: Path, edit) -> None:
    """Apply ``edit`` to the text of a (gzipped) file, in place."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(edit(text))


def append_line(line: str):
    return lambda text: text + line + "\n"


@pytest.mark.parametrize(
    ("name", "file", "edit", "message"),
    [
        ("EmotionClassification", "test.txt", append_line("too;many;fields"), "row 2001 has 3 fields, the header 2"),
        ("EmotionClassification", "train.txt.gz", append_line("i feel nothing;boredom"), "has label 'boredom'"),
        (
            "AmazonCounterfactualClassification",
            "EN_test.tsv",
            lambda t: t.replace("sentence", "text", 1),
            "no column 'sentence'",
        ),
        (
            "TweetSentimentExtractionClassification",
            "test.csv",
            append_line("x1,a tweet,happy"),
            "row 3535 has label 'happy'",
        ),
        (
            "WikiQA",
            "WikiQA-test.tsv.gz",
            append_line("\t".join(["Q9", "q", "D9", "t", "D9-0", "s", "yes"])),
            "Label 'yes'",
        ),
        ("RedditClustering", "test.jsonl.gz", append_line("{not json"), "line 6 is not valid JSON"),
        ("StackExchangeClustering", "test.jsonl.gz", append_line('{"sentences": ["a"], "labels": []}'), "line 6 needs"),
    ],
)
def test_a_malformed_file_is_one_line_naming_it(tmp_path: Path, name: str, file: str, edit, message: str) -> None:
    folder = tmp_path / FOLDERS[name]
    shutil.copytree(DATA / FOLDERS[name], folder)
    rewrite(folder / file, edit)
    with pytest.raises(UserError) as error:
        build_task(name, tmp_path, SubsetSizes())
    text = str(error.value)
    assert len(text.splitlines()) == 1 and str(folder / file) in text and message in text, text


def test_a_file_that_is_not_gzip_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    shutil.copytree(DATA / "emotion", tmp_path / "emotion")
    (tmp_path / "emotion" / "train.txt.gz").write_text("plain text, not gzip\n")
    params = write_params(tmp_path, data_dir=str(tmp_path))
    options = ["--model", "builtin:all-MiniLM-L6-v2", "--tasks", "EmotionClassification", "--params", str(params)]
    result = CliRunner().invoke(app, ["evaluate", *options])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: cannot read {tmp_path / 'emotion' / 'train.txt.gz'}")


def write_params(folder: Path, **evaluate: object) -> Path:
    """A params file that keeps MTEB's own result files in ``folder``."""
    import yaml

    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"evaluate": {"results_dir": str(folder / "mteb"), **evaluate}}))
    return path


def minilm_scores(tmp_path: Path, tasks: list[str], *options: str) -> dict:
    """``synthembed evaluate --model builtin:all-MiniLM-L6-v2 --tasks ... OPTIONS``, its per-task metrics."""
    output = tmp_path / "eval.json"
    command = ["evaluate", "--model", "builtin:all-MiniLM-L6-v2", "--tasks", ",".join(tasks), "--output", str(output)]
    result = CliRunner().invoke(app, [*command, *options, "--params", str(write_params(tmp_path))])
    assert result.exit_code == 0, result.output
    return json.loads(output.read_text())


# MTEB's published accuracy of all-MiniLM-L6-v2 on the test split (the main score) and the accuracy of each of the
# 10 experiments, from github:embeddings-benchmark/results, results/sentence-transformers__all-MiniLM-L6-v2/
# 8b3219a92973c328a8e22fadcfa821b5dc75636a/EmotionClassification.json (mteb 1.12.75).
# Banking77Classification reproduces the same way (0.8004, every experiment; same folder) but takes 4-5 minutes on
# 2 cores, so it is checked by hand. AmazonCounterfactualClassification (en) and
# TweetSentimentExtractionClassification have no published score of the current protocol in that repository,
# only the MTEB paper's (github:embeddings-benchmark/mtebpaper, results/all-MiniLM-L6-v2/, mteb 0.0.2: 0.6415 and
# 0.5541), made with the paper-era sampling, which gives different scores on the same data (EmotionClassification
# 0.3843 there, 0.4083 here; Banking77Classification 0.7975 there, 0.8004 here), so they are not asserted.
PUBLISHED = {
    "EmotionClassification": (0.4083, [0.4505, 0.371, 0.362, 0.422, 0.402, 0.408, 0.4315, 0.402, 0.4165, 0.4175]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_minilm_reproduces_mteb_classification(tmp_path: Path, name: str) -> None:
    accuracy, per_experiment = PUBLISHED[name]
    scores = minilm_scores(tmp_path, [name])[name]
    assert scores["main_score"] == scores["accuracy"] == pytest.approx(accuracy, abs=0.001)
    assert "subset" not in scores and scores["precision"] == "fp32"
    mteb_file = json.loads(next((tmp_path / "mteb").glob(f"results/*/*/{name}.json")).read_text())
    experiments = mteb_file["scores"]["test"][0]["scores_per_experiment"]
    assert [experiment["accuracy"] for experiment in experiments] == pytest.approx(per_experiment, abs=1e-4)


@pytest.mark.slow
def test_minilm_scores_sensibly_on_wikiqa_and_the_clustering_redraws(tmp_path: Path) -> None:
    """No published scores to match (WikiQA is not in MTEB, the clustering sets are a redraw): MAP well above
    chance and V-measures well above a random clustering's, on capped subsets to keep the test short."""
    scores = minilm_scores(tmp_path, ["WikiQA", *CLUSTERING], "--max-queries", "150")
    assert scores["WikiQA"]["main_score"] == scores["WikiQA"]["map_at_1000"] > 0.5
    assert scores["WikiQA"]["subset"]["n_queries"] == 150
    for name in CLUSTERING:
        assert scores[name]["main_score"] == scores[name]["v_measure"] > 0.2
        assert scores[name]["subset"] == {"n_queries": 750}
