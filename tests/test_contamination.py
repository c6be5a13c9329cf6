"""The contamination audit on real evaluation data: copies of test texts are flagged by both checks and stop
the stage, unrelated records pass, short texts match whole, and a rerun encodes no evaluation text."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthembed.data.contamination import NgramIndex, audit, check_contamination, evaluation_queries, words
from synthembed.data.records import TrainRecord
from synthembed.encoder import Embedder
from synthembed.errors import UserError
from synthembed.evaluate.tasks import bundled_tasks

DATA = Path(__file__).resolve().parents[1] / "data" / "eval"
TASKS = ["SciFact", "BIOSSES"]  # a retrieval and an STS task: 482 texts, a few seconds to encode
UNRELATED = "How long should I proof sourdough bread before baking it in a cast iron pot at home?"


def record(query: str, positive: str = "A plain positive document about something else entirely.") -> TrainRecord:
    return TrainRecord("Retrieve a document", query, positive, None, "test", "labeled")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the module: the task texts are encoded once, by whichever audit runs first."""
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def queries() -> dict[str, list[str]]:
    return evaluation_queries(DATA, TASKS)


@pytest.fixture(scope="module")
def long_claim(queries: dict[str, list[str]]) -> str:
    """A real SciFact test claim of at least 13 words."""
    return next(claim for claim in queries["SciFact"] if len(words(claim)) >= 13)


@pytest.fixture(scope="module")
def short_claim(queries: dict[str, list[str]]) -> str:
    """A real SciFact test claim of 6 to 12 words."""
    return next(claim for claim in queries["SciFact"] if 6 <= len(words(claim)) < 13)


def test_every_bundled_task_has_its_queried_texts() -> None:
    everything = evaluation_queries(DATA)
    assert list(everything) == list(bundled_tasks(DATA))
    assert all(texts and len(set(texts)) == len(texts) for texts in everything.values())
    assert len(everything["SciFact"]) == 300 and len(everything["WikiQA"]) == 243
    assert len(everything["SummEval"]) == 1100  # 100 articles x 11 human summaries, all distinct


def test_a_copied_test_query_is_flagged_by_both_checks_and_stops(
    cache: Path, long_claim: str, short_claim: str
) -> None:
    hidden = f"Background. {short_claim.upper()} The rest of this abstract is about other things."
    records = [
        record(long_claim.lower().rstrip(".")),  # case and punctuation do not hide a copy
        record(UNRELATED),
        record("An unrelated question about baking bread at home", positive=hidden),
    ]
    report = audit(records, DATA, tasks=TASKS, cache_dir=cache)

    scifact = report["tasks"]["SciFact"]
    assert (scifact["ngram"], scifact["embedding"], scifact["flagged"]) == (2, 1, 2)
    copied, pasted = scifact["examples"]
    assert copied["match"] == long_claim and copied["ngram"] == 1.0 and copied["similarity"] > 0.95
    assert copied["both"] and copied["field"] == "query"
    assert pasted["match"] == short_claim and pasted["field"] == "positive"  # a short claim matched whole
    assert report["flagged"] == {"ngram": 2, "embedding": 1, "any": 2} and report["records"] == 3
    assert report["flagged_queries"] == sorted([records[0].query, records[2].query])
    assert report["tasks"]["BIOSSES"]["flagged"] == 0
    assert report["tasks"]["BIOSSES"]["max_similarity"] is None  # STS sentences get the n-gram check only

    with pytest.raises(UserError) as stopped:
        check_contamination(report, 0)
    message = str(stopped.value)
    assert "\n" not in message and "2 training records overlap the SciFact test texts" in message
    assert long_claim.lower()[:40] in message and len(message) < 300
    check_contamination(report, 2)  # at the limit: passes


def test_an_unrelated_record_is_not_flagged(cache: Path) -> None:
    report = audit([record(UNRELATED)], DATA, tasks=TASKS, cache_dir=cache)
    assert report["flagged"] == {"ngram": 0, "embedding": 0, "any": 0}
    assert all(task["examples"] == [] for task in report["tasks"].values())
    assert report["tasks"]["SciFact"]["max_similarity"] < 0.6
    check_contamination(report, 0)


def test_short_texts_match_whole_and_only_whole() -> None:
    index = NgramIndex(["A man is playing a guitar.", "Global Burden of Disease Study", "x " * 20], n=13)
    assert index.overlaps("Yesterday, a man is PLAYING a guitar loudly.") == {0: 1.0}
    assert index.overlaps("a man is playing") == {}  # part of a short text is not a match
    assert index.overlaps("the Global Burden of Disease Study") == {}  # under min_words (6): never matched
    assert NgramIndex(["Global Burden of Disease Study"], n=13, min_words=4).overlaps(
        "the Global Burden of Disease Study"
    ) == {0: 1.0}
    assert index.overlaps("x " * 13) == {2: 1.0} and index.overlaps("x " * 12) == {}


def test_a_rerun_encodes_no_evaluation_text(cache: Path, monkeypatch: pytest.MonkeyPatch, long_claim: str) -> None:
    records = [record(long_claim), record(UNRELATED)]
    first = audit(records, DATA, tasks=TASKS, cache_dir=cache)  # encodes what the cache lacks
    shards = set(cache.rglob("*.keys"))
    encoded: list[str] = []
    original = Embedder.encode_documents

    def counting(self: Embedder, texts, *args, **kwargs):
        encoded.extend(texts)
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(Embedder, "encode_documents", counting)
    new = record("A new training query about mitochondria")
    again = audit([*records, new], DATA, tasks=TASKS, cache_dir=cache)
    assert encoded == [new.query]  # no task text, only the new record's query
    assert len(set(cache.rglob("*.keys")) - shards) == 1  # one new shard, holding that query
    assert again["tasks"]["SciFact"]["examples"][0] == first["tasks"]["SciFact"]["examples"][0]
