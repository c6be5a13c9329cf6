"""How a query is written is the model's own convention: decided when the embedder is built, saved with it, read
back on load, and used alike by plain sentence-transformers, embed, search and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.encoder import Embedder, QueryConvention, is_decoder
from synthembed.encoder.convention import CONFIG_KEY, DEFAULT_INSTRUCTION
from synthembed.errors import UserError
from synthembed.params import ModelParams, Params
from synthembed.search import run_search

TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "Bananas are yellow."]
FP32 = ModelParams(dtype="fp32")  # vectors are compared exactly
CUSTOM = QueryConvention(takes_instructions=True, template="Task: {task} | Query: ", default_instruction="Find it")


@pytest.fixture(scope="module")
def decoder(tiny_decoder_dir: Path) -> Embedder:
    return Embedder.load(str(tiny_decoder_dir), FP32)


@pytest.fixture(scope="module")
def saved_decoder(decoder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "embedder"
    decoder.save(path)
    return path


def test_a_decoder_takes_e5_instructions_and_an_encoder_none(decoder: Embedder, minilm_dir: Path) -> None:
    assert decoder.convention == QueryConvention(takes_instructions=True)
    assert decoder.query_text("tides", "Find papers") == "Instruct: Find papers\nQuery: tides"
    assert decoder.query_text("tides") == f"Instruct: {DEFAULT_INSTRUCTION}\nQuery: tides"
    assert decoder.query_text("tides", "  ") == "tides"  # a blank instruction is none
    minilm = Embedder.load(str(minilm_dir), FP32)
    assert not minilm.convention.takes_instructions
    assert minilm.query_text("tides", "Find papers") == "tides"
    np.testing.assert_array_equal(minilm.encode_queries(TEXTS, "Find papers"), minilm.encode_documents(TEXTS))


def test_plain_sentence_transformer_encodes_queries_like_the_embedder(decoder: Embedder, saved_decoder: Path) -> None:
    plain = SentenceTransformer(str(saved_decoder))
    ours = decoder.encode_queries(TEXTS)
    np.testing.assert_allclose(plain.encode_query(TEXTS), ours, atol=1e-5)
    np.testing.assert_allclose(plain.encode_document(TEXTS), decoder.encode_documents(TEXTS), atol=1e-5)
    assert not np.allclose(ours, decoder.encode_documents(TEXTS), atol=1e-3)  # the default instruction is there


def test_the_convention_survives_save_and_load(tiny_decoder_dir: Path, tmp_path: Path) -> None:
    embedder = Embedder.load(str(tiny_decoder_dir), FP32)
    CUSTOM.attach(embedder.model)
    expected = Embedder(embedder.model, "fp32").encode_queries(TEXTS, "Rank")
    embedder.save(tmp_path / "first")
    SentenceTransformer(str(tmp_path / "first")).save(str(tmp_path / "second"))  # re-saved by plain ST (MLflow)
    for folder in (tmp_path / "first", tmp_path / "second"):
        reloaded = Embedder.load(str(folder), FP32)
        assert reloaded.convention == CUSTOM
        assert reloaded.query_text("tides", "Rank") == "Task: Rank | Query: tides"
        np.testing.assert_allclose(reloaded.encode_queries(TEXTS, "Rank"), expected, atol=1e-5)
        assert SentenceTransformer(str(folder)).prompts == {"query": "Task: Find it | Query: ", "document": ""}


def test_a_folder_saved_without_a_convention_falls_back_to_the_decoder_rule(
    decoder: Embedder, saved_decoder: Path, tmp_path: Path
) -> None:
    """What an older version saved: no convention in config.json, empty prompts."""
    import shutil

    older = tmp_path / "older"
    shutil.copytree(saved_decoder, older)
    config = json.loads((older / "config.json").read_text())
    del config[CONFIG_KEY]
    (older / "config.json").write_text(json.dumps(config))
    settings = json.loads((older / "config_sentence_transformers.json").read_text())
    (older / "config_sentence_transformers.json").write_text(json.dumps(settings | {"prompts": {}}))

    reloaded = Embedder.load(str(older), FP32)
    assert reloaded.convention == decoder.convention
    np.testing.assert_allclose(reloaded.encode_queries(TEXTS), decoder.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(reloaded.model.encode_query(TEXTS), decoder.encode_queries(TEXTS), atol=1e-5)


def test_one_decoder_rule_for_backbones_and_saved_embedders(
    tiny_decoder_dir: Path, mistral_decoder_dir: Path, qwen_decoder_dir: Path, saved_decoder: Path, minilm_dir: Path
) -> None:
    assert json.loads((saved_decoder / "config.json").read_text())["architectures"] == ["LlamaModel"]
    assert all(is_decoder(path) for path in (tiny_decoder_dir, mistral_decoder_dir, qwen_decoder_dir, saved_decoder))
    assert not is_decoder(minilm_dir)


@pytest.mark.parametrize(
    "template", ["Instruct: {task} {task}", "no placeholder", "Instruct: {task} {other}", "Instruct: {task"]
)
def test_a_template_without_exactly_one_task_is_refused(template: str) -> None:
    with pytest.raises(UserError, match="exactly once"):
        QueryConvention(takes_instructions=True, template=template)


def test_a_malformed_saved_convention_is_one_clear_error(saved_decoder: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(saved_decoder, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {CONFIG_KEY: {"takes_instructions": "yes"}}))
    with pytest.raises(UserError, match=f"malformed {CONFIG_KEY}"):
        Embedder.load(str(broken), FP32)


def test_search_does_not_instruct_minilm_queries(tmp_path: Path, minilm_dir: Path, tiny_decoder_dir: Path) -> None:
    """A query equal to a document scores 1 exactly when the query is embedded as plain text."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    config = Params.model_validate({"model": {"dtype": "fp32"}})
    minilm = run_search(config, [TEXTS[2]], corpus, str(minilm_dir), k=1, index_dir=tmp_path / "minilm")
    assert minilm.hits[0][0].text == TEXTS[2] and minilm.hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    decoder = run_search(config, [TEXTS[2]], corpus, str(tiny_decoder_dir), k=3, index_dir=tmp_path / "decoder")
    assert max(hit.score for hit in decoder.hits[0]) < 0.999  # a decoder's query carries the default instruction


def test_embed_cli_writes_queries_by_the_models_convention(
    tmp_path: Path, tiny_decoder_dir: Path, decoder: Embedder
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  dtype: fp32\n")

    def embed(*options: str) -> np.ndarray:
        output = tmp_path / "out.npy"
        argv = ["embed", *TEXTS, *options, "--model", str(tiny_decoder_dir), "-o", str(output), "--params", str(params)]
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0, result.output
        return np.load(output)

    np.testing.assert_allclose(embed(), decoder.encode_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embed("--query"), decoder.encode_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embed("--instruction", "Rank"), decoder.encode_queries(TEXTS, "Rank"), atol=1e-5)
