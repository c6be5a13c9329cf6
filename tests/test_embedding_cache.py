"""The evaluation's embedding cache (content-addressed per model, prompt and text) and the named suites."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from synthembed.encoder import Embedder
from synthembed.errors import UserError
from synthembed.evaluate.cache import EmbeddingCache
from synthembed.evaluate.tasks import SubsetSizes, build_tasks, bundled_tasks
from synthembed.evaluate.tasks.suites import CPU
from synthembed.params import ModelParams, Params

DATA = Path(__file__).resolve().parents[1] / "data" / "eval"
TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "The cat sat on the mat."]


class Counting:
    """A real embedder's encode function that records every text it was asked to encode."""

    def __init__(self, encode) -> None:
        self.encode = encode
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.encode(texts)


def encoded_and_read(summary: str) -> tuple[int, int]:
    """The cache's counts from an evaluation's summary line."""
    found = re.search(r"([\d,]+) texts encoded, ([\d,]+) read from", summary)
    assert found, summary
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


@pytest.fixture(scope="module")
def embedder(tiny_decoder_dir: Path) -> Embedder:
    return Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32"))


def test_a_text_is_encoded_once_per_prompt_and_survives_a_restart(tmp_path: Path, embedder: Embedder) -> None:
    cache = EmbeddingCache(tmp_path)
    documents = Counting(embedder.encode_documents)
    first = cache.encode(TEXTS, "", documents)
    assert documents.texts == TEXTS[:2]  # the repeated text once
    np.testing.assert_allclose(first, embedder.encode_documents(TEXTS), atol=1e-5)
    assert (cache.encoded, cache.reused) == (2, 1)

    again = cache.encode(TEXTS[::-1], "", documents)
    assert documents.texts == TEXTS[:2] and cache.reused == 4
    np.testing.assert_array_equal(again, first[::-1])

    prompt = embedder.convention.prefix("Retrieve a fact")
    queries = Counting(lambda texts: embedder.encode_queries(texts, instruction="Retrieve a fact"))
    instructed = cache.encode(TEXTS[:1], prompt, queries)
    assert queries.texts == TEXTS[:1]  # another prompt is another key
    assert not np.allclose(instructed[0], first[0], atol=1e-3)

    restarted = EmbeddingCache(tmp_path)  # a new run reads what the last one wrote
    nothing = Counting(embedder.encode_documents)
    np.testing.assert_array_equal(restarted.encode(TEXTS, "", nothing), first)
    assert nothing.texts == [] and len(restarted) == 3


def test_a_shard_cut_short_by_a_kill_is_ignored(tmp_path: Path, embedder: Embedder) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.encode(TEXTS[:1], "", embedder.encode_documents)
    cache.encode(TEXTS[1:2], "", embedder.encode_documents)
    vectors = sorted(tmp_path.glob("*.npy"))
    assert len(vectors) == 2 and len(list(tmp_path.glob("*.keys"))) == 2
    vectors[0].unlink()  # killed after the keys landed but before the vectors did: that shard is unreadable
    survivor = EmbeddingCache(tmp_path)
    assert len(survivor) == 1
    counting = Counting(embedder.encode_documents)
    survivor.encode(TEXTS[:2], "", counting)
    assert len(counting.texts) == 1  # only the lost text is encoded again


def test_the_fingerprint_follows_weights_and_settings(tiny_decoder_dir: Path, embedder: Embedder) -> None:
    same = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32"))
    assert same.fingerprint() == embedder.fingerprint()
    other_pooling = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32", pooling="lasttoken"))
    shorter = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32", max_seq_length=64))
    changed = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32"))
    with torch.no_grad():
        next(changed.model.parameters())[0, 0] += 1.0
    prints = {model.fingerprint() for model in (embedder, other_pooling, shorter, changed)}
    assert len(prints) == 4


def test_a_second_evaluation_encodes_nothing_and_scores_the_same(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    from synthembed.evaluate import run_evaluate

    evaluate = {"results_dir": str(tmp_path / "mteb"), "max_queries": 20, "cache_dir": str(tmp_path / "cache")}
    config = Params.model_validate({"evaluate": evaluate, "model": {"max_seq_length": 64}})
    tasks = ["STSBenchmark", "EmotionClassification"]
    first = run_evaluate(config, str(tiny_decoder_dir), tasks)
    second = run_evaluate(config, str(tiny_decoder_dir), tasks)
    assert encoded_and_read(first.summary)[0] > 0
    encoded, read = encoded_and_read(second.summary)
    assert encoded == 0 and read > 0
    for task in tasks:
        assert second.metrics[task]["main_score"] == pytest.approx(first.metrics[task]["main_score"], abs=1e-6)
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.endswith("-fp32")


def test_the_cpu_suite_covers_every_category_with_recorded_sizes() -> None:
    tasks = build_tasks(["suite:cpu"], DATA, SubsetSizes(seed=7))
    assert [task.metadata.name for task in tasks] == list(CPU)
    categories = {task.metadata.type for task in tasks}
    expected = {"Retrieval", "STS", "Classification", "PairClassification", "Reranking", "Clustering", "Summarization"}
    assert categories == expected
    assert all(task.seed == 7 for task in tasks)  # the run's seed draws every subset
    banking = next(task for task in tasks if task.metadata.name == "Banking77Classification")
    assert banking.n_experiments == 1 and banking.subset == {"n_queries": 300, "n_experiments": 1}
    assert all(task.subset is not None for task in tasks if task.metadata.name != "BIOSSES")


def test_the_bundled_suite_takes_the_params_sizes() -> None:
    tasks = build_tasks(["suite:bundled"], DATA, SubsetSizes(max_queries=10, seed=3))
    assert [task.metadata.name for task in tasks] == list(bundled_tasks(DATA))
    sts = next(task for task in tasks if task.metadata.name == "STS13")
    assert sts.subset == {"n_queries": 10}


def test_an_unknown_suite_names_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown task 'suite:gpu'.*suites: suite:cpu, suite:bundled"):
        build_tasks(["suite:gpu"], DATA, SubsetSizes())
