"""Corpus search: the three corpus formats, index reuse and invalidation, numpy vs FAISS, the CLI."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.corpus import read_corpus
from synthembed.encoder import Embedder
from synthembed.errors import UserError
from synthembed.params import Params
from synthembed.search import run_search, top_k

DOCS = [
    "Paris is the capital and largest city of France.",
    "Python is a popular programming language for data science.",
    "Bananas are a yellow tropical fruit rich in potassium.",
    "The Great Barrier Reef lies off the coast of Queensland, Australia.",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(DOCS) + "\n")
    return path


@pytest.fixture
def encode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of every real encode call, documents or queries (embedding the corpus is a call of len(corpus))."""
    calls: list[int] = []

    def spy(original):
        def encode(self, texts, *args, **kwargs):
            calls.append(len(texts))
            return original(self, texts, *args, **kwargs)

        return encode

    for name in ("encode_documents", "encode_queries"):
        monkeypatch.setattr(Embedder, name, spy(getattr(Embedder, name)))
    return calls


def test_read_corpus_formats(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("first\n\nsecond\n")  # ids are line numbers from 0: a blank line keeps its number
    assert [(d.id, d.content) for d in read_corpus(plain)] == [("0", "first"), ("2", "second")]

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"id": "a", "text": "alpha"}\n\n{"text": "beta"}\n')
    assert [(d.id, d.content) for d in read_corpus(jsonl)] == [("a", "alpha"), ("2", "beta")]

    beir = tmp_path / "corpus.jsonl"
    beir.write_text('{"_id": "d1", "title": "Cats", "text": "They purr."}\n{"_id": "d2", "title": "", "text": "x"}\n')
    assert [(d.id, d.content) for d in read_corpus(beir)] == [("d1", "Cats They purr."), ("d2", "x")]


def test_a_beir_folder_and_a_gzipped_corpus_read_like_the_plain_file(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    folder.mkdir()
    rows = '{"_id": "d1", "title": "Cats", "text": "They purr."}\n{"_id": "d2", "text": "Dogs bark."}\n'
    (folder / "corpus.jsonl.gz").write_bytes(gzip.compress(rows.encode()))
    expected = [("d1", "Cats They purr."), ("d2", "Dogs bark.")]
    assert [(d.id, d.content) for d in read_corpus(folder)] == expected
    assert [(d.id, d.content) for d in read_corpus(folder / "corpus.jsonl.gz")] == expected
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="folder without corpus.jsonl"):
        read_corpus(tmp_path / "empty")
    (tmp_path / "fake.txt.gz").write_text("not compressed")
    with pytest.raises(UserError, match="is not gzip"):
        read_corpus(tmp_path / "fake.txt.gz")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no text"),
        ('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "occurs more than once"),
        ('{"id": 1, "text": "a"}\nnot json\n', "line 2 is not valid JSON"),
        ('{"id": 1, "body": "a"}\n', "no string field 'text'"),
    ],
)
def test_read_corpus_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_corpus(path)


def test_index_is_reused_until_corpus_or_model_changes(
    tmp_path: Path, corpus: Path, tiny_decoder_dir: Path, minilm_dir: Path, encode_calls: list[int]
) -> None:
    config = Params()
    first = run_search(config, ["capital of France"], corpus, str(tiny_decoder_dir), k=2)
    manifest = first.index_dir / "manifest.json"
    assert first.index_dir == tmp_path / "corpus.txt.index" and not first.reused
    assert encode_calls == [len(DOCS), 1]
    stamp = (manifest.stat().st_mtime_ns, (first.index_dir / "embeddings.npy").stat().st_mtime_ns)

    second = run_search(config, ["bananas", "reef"], corpus, str(tiny_decoder_dir), k=2)
    assert second.reused and encode_calls == [len(DOCS), 1, 2]  # only the queries were embedded
    assert (manifest.stat().st_mtime_ns, (first.index_dir / "embeddings.npy").stat().st_mtime_ns) == stamp
    assert [len(h) for h in second.hits] == [2, 2]

    corpus.write_text("\n".join([*DOCS, "A new document about volcanoes."]) + "\n")
    third = run_search(config, ["volcano"], corpus, str(tiny_decoder_dir), k=10)
    assert not third.reused and encode_calls[-2:] == [len(DOCS) + 1, 1]
    assert json.loads(manifest.read_text())["documents"] == len(DOCS) + 1
    assert len(third.hits[0]) == len(DOCS) + 1

    fourth = run_search(config, ["volcano"], corpus, str(minilm_dir), k=1)  # another model: re-embed
    assert not fourth.reused and json.loads(manifest.read_text())["dimension"] == 384
    assert fourth.hits[0][0].text == "A new document about volcanoes."


def test_numpy_and_faiss_agree() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 32)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[[3, 77, 400]] + 0.01
    scores, rows = top_k(docs, queries, 5)
    assert rows[:, 0].tolist() == [3, 77, 400]
    assert np.all(np.diff(scores, axis=1) <= 0)
    faiss_scores, faiss_rows = top_k(docs, queries, 5, backend="faiss")
    assert faiss_rows[:, 0].tolist() == [3, 77, 400]
    np.testing.assert_allclose(faiss_scores[:, 0], scores[:, 0], rtol=1e-4)


def test_missing_faiss_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(UserError, match="pip install"):
        top_k(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)[:1], 1, backend="faiss")


def test_search_cli_finds_the_relevant_document(tmp_path: Path, corpus: Path, minilm_dir: Path) -> None:
    index = tmp_path / "idx"
    args = ["search", "Which city is the capital of France?", "what fruit is yellow", "--corpus", str(corpus)]
    args += ["--model", str(minilm_dir), "-k", "2", "--index", str(index)]
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "built index" in table.stderr
    assert "rank   score  id  text" in table.stdout and DOCS[0] in table.stdout

    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert "reused index" in as_json.stderr
    results = json.loads(as_json.stdout)
    assert [r["hits"][0]["id"] for r in results] == ["0", "2"]
    assert results[0]["hits"][0]["score"] > results[0]["hits"][1]["score"]


def _search(tmp_path: Path, corpus: Path, model: str, *args: str):
    """``synthembed search`` through the real CLI, with params of its own (fp32: embeddings compare exactly)."""
    params = tmp_path / "params.yaml"
    params.write_text("model:\n  dtype: fp32\n")
    argv = ["search", *args, "--corpus", str(corpus), "--model", model, "--params", str(params)]
    return CliRunner().invoke(app, argv)


def test_plain_corpus_ids_are_line_numbers(tmp_path: Path, minilm_dir: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"{DOCS[0]}\n\n\n{DOCS[2]}\n   \n{DOCS[3]}\n")
    result = _search(tmp_path, corpus, str(minilm_dir), "what fruit is yellow", "coral reef", "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    assert [r["hits"][0]["id"] for r in json.loads(result.stdout)] == ["3", "5"]
    assert "3 documents" in result.stderr


def test_bom_files_read_like_plain_utf8(tmp_path: Path, minilm_dir: Path) -> None:
    """Notepad and PowerShell start UTF-8 files with a byte-order mark; it must not make JSONL read as text."""
    rows = "".join(json.dumps({"id": f"doc-{i}", "text": text}) + "\n" for i, text in enumerate(DOCS))
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    result = _search(tmp_path, bom, str(minilm_dir), "what fruit is yellow", "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    hit = json.loads(result.stdout)[0]["hits"][0]
    assert (hit["id"], hit["text"]) == ("doc-2", DOCS[2])

    plain = tmp_path / "plain.jsonl"
    plain.write_text(rows)
    vectors = {}
    for name, source in (("bom", bom), ("plain", plain)):
        output = tmp_path / f"{name}.jsonl"
        argv = ["embed", "-i", str(source), "-o", str(output), "--model", str(minilm_dir)]
        embedded = CliRunner().invoke(app, [*argv, "--params", str(tmp_path / "params.yaml")])  # fp32, as above
        assert embedded.exit_code == 0, embedded.output
        vectors[name] = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["text"] for row in vectors["bom"]] == DOCS
    assert vectors["bom"] == vectors["plain"]


def test_an_empty_folder_or_one_an_older_run_left_is_an_index(tmp_path: Path, corpus: Path, minilm_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _search(tmp_path, corpus, str(minilm_dir), "capital", "--index", str(empty))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in empty.iterdir()) == ["embeddings.npy", "manifest.json"]
    (empty / ".embeddings.npy.abcd1234.tmp").write_bytes(b"half")  # an interrupted earlier version's temporary
    assert _search(tmp_path, corpus, str(minilm_dir), "capital", "--index", str(empty)).exit_code == 0


@pytest.mark.parametrize("manifest", ["[1, 2]", "null", '"text"', "42", '{"format": 1', "", "\xff"])
def test_malformed_manifest_is_rebuilt(tmp_path: Path, corpus: Path, minilm_dir: Path, manifest: str) -> None:
    index = tmp_path / "idx"
    args = ["what fruit is yellow", "-k", "1", "--json", "--index", str(index)]
    assert _search(tmp_path, corpus, str(minilm_dir), *args).exit_code == 0
    (index / "manifest.json").write_bytes(manifest.encode("latin-1"))
    result = _search(tmp_path, corpus, str(minilm_dir), *args)
    assert result.exit_code == 0, result.output
    assert "built index" in result.stderr
    assert json.loads(result.stdout)[0]["hits"][0]["id"] == "2"
    assert json.loads((index / "manifest.json").read_text())["documents"] == len(DOCS)
