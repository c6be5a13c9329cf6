"""Corpus-grounded generation: generate samples documents of ``generate.corpus``, the LLM writes each one's
task and query (over real HTTP through LiteLLM, or offline through the guided decoder), and the records are a
labeled set that prepare reads."""

from __future__ import annotations

import json
from pathlib import Path

import llm_server
import pytest
from llm_server import FakeLLMServer

from synthembed.corpus import read_corpus
from synthembed.data.labeled import read_labeled
from synthembed.errors import UserError
from synthembed.params import Params
from synthembed.pipeline.run import run_stage
from synthembed.synth import budget, grounded, taxonomy
from synthembed.synth.client import LLMClient
from synthembed.synth.taxonomy import response_format

LONG = (
    "Rainwater harvesting collects runoff from roofs into tanks, where a first-flush diverter keeps the dirtiest "
    "water out. Stored water serves gardens and toilets, and with filtration and disinfection it can be drunk. "
    "Tank size follows roof area, local rainfall and the household's demand over the dry season."
)
DOCUMENTS = [
    {"_id": "rain", "title": "Rainwater harvesting", "text": LONG},
    {"_id": "bees", "text": "Honey bees " + "communicate where flowers are through a waggle dance on the comb " * 4},
    {"_id": "tides", "text": "Tides are driven by the gravity of the Moon and the Sun acting on the oceans " * 3},
    {"_id": "copy", "text": "COPYME the quick brown fox jumps over the lazy dog near the riverbank " * 3},
    {"_id": "h2o", "text": "Water freezes at zero degrees Celsius."},
    {"_id": "fe", "text": "Fe"},
    {"_id": "empty", "text": "EMPTYQ a short note on sourdough starters."},
    {"_id": "au", "text": "Gold, symbol Au."},
]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")


def _config(server: FakeLLMServer, corpus: str | None = "corpus.jsonl", **generate) -> Params:
    return Params.model_validate(
        {
            "llm": {"model": "openai/fake-llm", "api_base": server.api_base, "max_retries": 0, "timeout_s": 5.0},
            # sts needs no brainstormed task, so generate runs without the brainstorm stage.
            "generate": {"kinds": {"sts": 1.0}, "num_examples": 2, "corpus": corpus, **generate},
        }
    )


def _write_corpus(path: Path = Path("corpus.jsonl")) -> dict[str, str]:
    path.write_text("".join(json.dumps(document) + "\n" for document in DOCUMENTS))
    return {document.id: document.content for document in read_corpus(path)}


def _server_answer(request) -> dict[str, str]:
    """What the fake server answers to ``request`` (its answers are a hash of the prompt and the seed)."""
    prompt = request.messages[-1]["content"]
    body = {"response_format": response_format(request.schema_name, request.schema)}
    return llm_server._answer(body, prompt, json.dumps([prompt, request.seed]))


def test_generate_writes_grounded_records_that_prepare_reads_as_a_labeled_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    contents = _write_corpus()
    with FakeLLMServer() as server:
        config = _config(server, grounded_examples=5)
        plan = grounded.plan_grounded(config, grounded.load_documents(config))
        result = run_stage("generate", config, track=False)
    rows = [json.loads(line) for line in Path(config.generate.grounded_output).read_text().splitlines()]
    assert [row["doc_id"] for row in rows] == [request.meta["document"].id for request in plan]
    assert len(rows) == len({row["doc_id"] for row in rows}) == 5  # sampled without replacement
    for row, request in zip(rows, plan, strict=True):
        answer = _server_answer(request)
        assert (row["instruction"], row["query"]) == (answer["task"], answer["query"])
        assert row["positive"] == contents[row["doc_id"]] and row["kind"] == request.schema_name
        assert row["model"] == "fake-llm"
    labeled = read_labeled(config.generate.grounded_output)
    assert [(r.instruction, r.query, r.positive) for r in labeled] == [
        (row["instruction"], row["query"], row["positive"]) for row in rows
    ]
    assert all(record.negative is None and record.source == "grounded" for record in labeled)

    found = result.metrics["grounded"]
    assert found["valid"] == found["planned"] == found["requests"] == 5 and found["corpus_documents"] == 8
    assert result.metrics["valid"] == 2 and result.metrics["requests"] == 2  # the usual examples, apart
    assert json.loads(Path("metrics/generate.json").read_text())["grounded"]["valid"] == 5
    assert "5 grounded records (0 rejected) in data/synthetic/grounded.jsonl" in result.summary
    assert Path(config.llm.cache_dir, "generate.journal.jsonl").read_text().count("\n") == 7  # both batches

    # The seed fixes the documents; another seed samples others.
    again = [r.meta["document"].id for r in grounded.plan_grounded(config, read_corpus("corpus.jsonl"))]
    assert again == [row["doc_id"] for row in rows]
    other = Params.model_validate({**config.model_dump(), "seed": config.seed + 1})
    assert [r.meta["document"].id for r in grounded.plan_grounded(other, read_corpus("corpus.jsonl"))] != again


def test_copied_and_empty_queries_are_counted_by_shape_and_not_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    contents = _write_corpus()
    answer = llm_server._answer

    def misbehaving(body, prompt, identity):  # copies a span of the COPYME document, the whole "Fe" one
        data = answer(body, prompt, identity)
        if "COPYME" in prompt:
            data["query"] = "the quick brown FOX jumps over"
        elif "EMPTYQ" in prompt:
            data["query"] = "  "
        elif '"""\nFe\n"""' in prompt:
            data["query"] = "fe"
        return data

    monkeypatch.setattr(llm_server, "_answer", misbehaving)
    with FakeLLMServer() as server:
        found = run_stage("generate", _config(server, grounded_examples=100), track=False).metrics["grounded"]
    assert found["planned"] == 8 and found["valid"] == 5
    assert found["rejected_by_reason"] == {"copied_query": 2, "empty_query": 1}
    assert found["per_shape"]["grounded_short_long"]["rejected_copied_query"] == 1
    assert found["per_shape"]["grounded_short_short"] == {
        "rejected_copied_query": 1,
        "rejected_empty_query": 1,
        "valid": 2,
    }
    written = {json.loads(line)["doc_id"] for line in Path("data/synthetic/grounded.jsonl").read_text().splitlines()}
    assert written == set(contents) - {"copy", "fe", "empty"}


def test_validation_reasons():
    document = "Tides are driven by the gravity of the Moon."
    ok = {"task": "Given a question about the sea, find texts that explain it.", "query": "why do tides happen"}
    assert taxonomy.validate_grounded(ok, document) == (ok, None)
    assert taxonomy.validate_grounded({**ok, "query": "driven by the  GRAVITY of"}, document)[1] == "copied_query"
    assert taxonomy.validate_grounded({**ok, "query": "the Moon"}, document) == ({**ok, "query": "the Moon"}, None)
    assert taxonomy.validate_grounded({**ok, "query": document}, document)[1] == "copied_query"
    assert taxonomy.validate_grounded({**ok, "task": ""}, document)[1] == "empty_task"
    assert taxonomy.validate_grounded({"task": "x"}, document)[1] == "missing_key"
    assert taxonomy.validate_grounded(["x"], document)[1] == "not_an_object"


def test_shape_follows_the_documents_length_and_the_prompt_shows_the_document(tmp_path):
    corpus = tmp_path / "corpus.txt"  # plain text: one document a line
    long_words = [f"w{i}" for i in range(400)]
    corpus.write_text(f"{LONG}\nWater freezes at zero degrees Celsius.\n{' '.join(long_words)}\n")
    config = Params.model_validate({"generate": {"corpus": str(corpus), "grounded_examples": 3}})
    plan = {r.meta["document"].id: r for r in grounded.plan_grounded(config, grounded.load_documents(config))}
    long, short, huge = plan["0"], plan["1"], plan["2"]
    assert long.schema_name == huge.schema_name == "grounded_short_long" and short.schema_name == "grounded_short_short"
    assert " ".join(LONG.split()) in long.messages[-1]["content"] and "search system" in long.messages[-1]["content"]
    assert "Water freezes at zero degrees Celsius." in short.messages[-1]["content"]
    assert "matching system" in short.messages[-1]["content"]
    for name, value in long.meta["params"].items():  # the query parameters are short_long's, stated in the prompt
        assert value in taxonomy.PARAMETER_SPACES["short_long"][name] and str(value) in long.messages[-1]["content"]
    shown = huge.messages[-1]["content"]
    assert "w299 ..." in shown and "w300" not in shown  # the prompt shows 300 words at most
    # The budget is the short side only: a sentence-long task and the query, a fraction of a full example.
    assert short.meta["answer_tokens"] == budget.answer_tokens("short_short", {}) == 142
    full = budget.answer_tokens("short_long", {"query_length": "5 to 15 words", "num_words": 100})
    assert long.meta["answer_tokens"] == 142 < full / 2 and long.max_tokens == min(142, config.llm.max_tokens)
    assert taxonomy.json_schema(long.schema_name)["required"] == ["task", "query"]
    french = "Le chat dort sur le canapé depuis ce matin, et personne ne veut le réveiller."
    assert budget.english_rate(french) and not budget.english_rate("東京は日本の首都です。")


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_an_unusable_corpus_is_one_line_before_any_request(tmp_path, monkeypatch, problem):
    monkeypatch.chdir(tmp_path)
    if problem == "empty":
        Path("corpus.jsonl").write_text("\n")
    with FakeLLMServer() as server:
        with pytest.raises(UserError) as error:
            run_stage("generate", _config(server), track=False)
        assert server.total_requests == 0
    message = str(error.value)
    assert "\n" not in message and message.startswith("generate.corpus: ") and "corpus.jsonl" in message
    assert not Path("data/synthetic/examples.jsonl").exists()


def test_the_offline_decoder_writes_the_grounded_json(tmp_path, monkeypatch, tiny_decoder_dir):
    """The local provider with a tiny random decoder: whatever the values, the answer is the shape's JSON."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synthembed.synth import local_provider

    monkeypatch.chdir(tmp_path)
    _write_corpus()
    local_provider.register()
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir).eval()
    monkeypatch.setitem(local_provider._handler._models, "tiny-random", (model, tokenizer))
    config = Params.model_validate(
        {"llm": {"model": "local/tiny-random", "max_tokens": 16}, "generate": {"corpus": "corpus.jsonl"}}
    )
    plan = grounded.plan_grounded(config, grounded.load_documents(config))
    shapes = {request.schema_name: request for request in plan}
    assert set(shapes) == set(taxonomy.GROUNDED_SHAPES)
    replies = []
    LLMClient(config.llm, "generate").run(list(shapes.values()), lambda reply: replies.append(reply), desc="grounded")
    assert len(replies) == 2
    for reply in replies:
        assert reply.error is None and reply.finish_reason in ("stop", "length")
        data = json.loads(reply.content)
        assert list(data) == ["task", "query"] and all(isinstance(value, str) for value in data.values())
