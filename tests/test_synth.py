"""Taxonomy, prompts, parsing and request planning of synthetic data generation (no LLM involved)."""

from __future__ import annotations

import json
import random
from collections import Counter

import jinja2
import pytest

from synthembed.errors import UserError
from synthembed.params import Params
from synthembed.synth import prompts, taxonomy
from synthembed.synth.cache import Journal
from synthembed.synth.generate import plan_requests, weights_of
from synthembed.synth.parsing import extract_json, salvage_strings

# The paper's template parameter spaces (Wang et al. 2024), value by value.
PAPER_SPACES = {
    "short_long": {
        "query_type": ["extremely long-tail", "long-tail", "common"],
        "query_length": ["less than 5 words", "5 to 15 words", "at least 10 words"],
        "clarity": ["clear", "understandable with some effort", "ambiguous"],
        "num_words": [50, 100, 200, 300, 400, 500],
        "difficulty": ["high school", "college", "PhD"],
    },
    "long_short": {
        "num_words": ["less than 10", "at least 10", "at least 50", "at least 100", "at least 200"],
        "difficulty": ["high school", "college", "PhD"],
        "clarity": ["clear", "understandable with some effort", "ambiguous"],
    },
    "short_short": {},
    "long_long": {},
    "sts": {
        "unit": ["sentence", "phrase", "passage"],
        "high_score": [4, 4.5, 5],
        "low_score": [2.5, 3, 3.5],
        "difficulty": ["elementary school", "high school", "college"],
    },
    "bitext": {
        "unit": ["sentence", "phrase", "passage"],
        "high_score": [4, 4.5, 5],
        "low_score": [1.5, 2, 2.5],
        "difficulty": ["elementary school", "high school", "college"],
    },
}
# The paper's synthetic data by kind, in thousands of examples (its Figure 2, about 500k in all).
PAPER_MIX = {"short_long": 167, "long_short": 122, "sts": 99, "bitext": 89, "long_long": 17, "short_short": 13}
UNIFORM = dict.fromkeys(taxonomy.KINDS, 1.0)
PAPER_KEYS = {
    "short_long": ["user_query", "positive_document", "hard_negative_document"],
    "long_short": ["input_text", "label", "misleading_label"],
    "short_short": ["input", "positive_document"],
    "long_long": ["input", "positive_document"],
    "sts": ["S1", "S2", "S3"],
    "bitext": ["S1", "S2", "S3"],
}


def test_parameter_spaces_and_keys_match_design():
    assert {k: {p: list(v) for p, v in space.items()} for k, space in taxonomy.PARAMETER_SPACES.items()} == (
        PAPER_SPACES
    )
    assert {k: list(v) for k, v in taxonomy.KEYS.items()} == PAPER_KEYS


def test_languages_are_xlmr_weighted_toward_english():
    weights = taxonomy.LANGUAGE_WEIGHTS
    assert 90 <= len(weights) <= 100
    assert max(weights, key=weights.get) == "English"
    assert weights["English"] > 5 * weights["German"] > 5 * weights["Swahili"]
    with pytest.raises(UserError, match="Klingon"):
        taxonomy.allowed_languages(["English", "Klingon"])


@pytest.mark.parametrize("kind", taxonomy.KINDS)
def test_generate_prompt_carries_keys_and_every_sampled_value(kind):
    params = taxonomy.sample_params(kind, random.Random(3), taxonomy.allowed_languages("all"))
    text = prompts.render("generate", kind, task="Find recipes that use a given spice.", **params)
    for key in taxonomy.KEYS[kind]:
        assert f'"{key}"' in text
    for value in params.values():
        assert str(value) in text
    if kind not in taxonomy.FIXED_TASKS:
        assert "Find recipes that use a given spice." in text


@pytest.mark.parametrize("kind", taxonomy.BRAINSTORM_KINDS)
def test_brainstorm_prompt_is_strict(kind):
    assert "7 new tasks" in prompts.render("brainstorm", kind, num_tasks=7)
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("brainstorm", kind)


def test_missing_template_variable_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        prompts.render("generate", "short_long", task="t", language="English")


@pytest.mark.parametrize(
    "text",
    [
        '{"S1": "a", "S2": "b", "S3": "c"}',
        'Here you go:\n```json\n{"S1": "a", "S2": "b", "S3": "c"}\n```\nEnjoy.',
        'Sure! {"S1": "a", "S2": "b", "S3": "c"} Let me know [if] you need more.',
        '[1, 2] and then {"S1": "a", "S2": "b", "S3": "c"}',
    ],
)
def test_extract_json_finds_the_object(text):
    assert extract_json(text) == {"S1": "a", "S2": "b", "S3": "c"}


def test_extract_json_rejects_broken_text_and_salvage_keeps_complete_items():
    assert extract_json('{"S1": "a", "S2": "b') is None
    assert extract_json("no json here") is None
    assert salvage_strings('{"tasks": ["Find a.", "Rank b \\"x\\".", "Cut off') == ["Find a.", 'Rank b "x".']


def test_validate_reasons():
    ok, reason = taxonomy.validate("short_short", {"input": " q ", "positive_document": "d", "extra": 1})
    assert (ok, reason) == ({"input": "q", "positive_document": "d"}, None)
    assert taxonomy.validate("short_short", ["x"]) == (None, "not_an_object")
    assert taxonomy.validate("short_short", {"input": "q"}) == (None, "missing_key")
    assert taxonomy.validate("short_short", {"input": "q", "positive_document": ""}) == (None, "empty_value")
    assert taxonomy.validate("short_short", {"input": "q", "positive_document": ["d"]}) == (
        None,
        "not_a_string",
    )
    assert taxonomy.validate("sts", {"S1": "a", "S2": "a", "S3": "b"}) == (None, "repeated_value")
    assert taxonomy.validate_tasks({"tasks": ["Find reviews of a product.", "first task", " ", 3]}) == [
        "Find reviews of a product."
    ]
    assert taxonomy.validate_tasks({"tasks": []}) is None


def test_guided_decoding_reads_the_schema_and_string_bodies():
    from synthembed.synth.guided_decoding import _string_body, _unescape, plan_of

    def options(name: str, schema: dict) -> dict:
        return {"response_format": taxonomy.response_format(name, schema)}

    assert plan_of(options("sts", taxonomy.json_schema("sts"))) == [("S1", False), ("S2", False), ("S3", False)]
    assert plan_of(options("tasks", taxonomy.BRAINSTORM_SCHEMA)) == [("tasks", True)]
    assert plan_of(options("nested", {"properties": {"a": {"type": "object"}}})) is None
    assert plan_of({}) is None
    # A value ends at the first unescaped quote; escapes are decoded, broken ones kept literally.
    assert _string_body('q \\"x\\" more", "next": "') == 'q \\"x\\" more'
    assert _string_body("cut off by max_tokens \\") == "cut off by max_tokens "
    assert _unescape(_string_body('line\\nbreak"')) == "line\nbreak"
    assert _unescape("bad \\q escape") == "bad \\q escape"


def test_plan_is_fixed_by_seed_and_restricted_to_languages():
    tasks = {kind: [f"{kind} task {i}" for i in range(5)] for kind in taxonomy.BRAINSTORM_KINDS}
    config = Params.model_validate({"seed": 7, "generate": {"num_examples": 60, "languages": ["German", "Thai"]}})
    first, again = plan_requests(config, tasks), plan_requests(config, tasks)
    assert [r.messages for r in first] == [r.messages for r in again]
    assert {r.meta["kind"] for r in first} == set(taxonomy.KINDS)
    assert len({r.seed for r in first}) == 60
    for request in first:
        params = request.meta["params"]
        assert params.get("language", params.get("src_lang")) in {"German", "Thai"}
        if request.meta["kind"] in taxonomy.FIXED_TASKS:
            assert request.meta["task"] == taxonomy.FIXED_TASKS[request.meta["kind"]]
        else:
            assert request.meta["task"] in tasks[request.meta["kind"]]
    other = plan_requests(config.model_copy(update={"seed": 8}), tasks)
    assert [r.messages for r in other] != [r.messages for r in first]


def test_paper_kinds_follow_the_papers_mix_over_10000_draws():
    tasks = {kind: [f"{kind} task {i}" for i in range(3)] for kind in taxonomy.BRAINSTORM_KINDS}
    config = Params.model_validate({"generate": {"kinds": "paper", "num_examples": 10_000}})
    counts = Counter(request.meta["kind"] for request in plan_requests(config, tasks))
    total = sum(PAPER_MIX.values())
    for kind, thousands in PAPER_MIX.items():  # 3 standard errors of a share at 10,000 draws is at most 1.5 points
        assert counts[kind] / 10_000 == pytest.approx(thousands / total, abs=0.015), kind
    assert counts["short_long"] > 10 * counts["short_short"]  # uniform weights would make them equal


@pytest.mark.parametrize(
    ("kinds", "model", "expected"),
    [
        ("auto", "local/SmolLM2-135M-Instruct", UNIFORM),  # 24 offline examples must show every kind
        ("auto", "openai/gpt-4o-mini", PAPER_MIX),
        ("auto", "ollama/llama3.1", PAPER_MIX),
        ("paper", "local/SmolLM2-135M-Instruct", PAPER_MIX),
        ({"sts": 2.0, "bitext": 1}, "openai/gpt-4o-mini", {"sts": 2.0, "bitext": 1}),
    ],
)
def test_kind_weights_resolve_per_model(kinds, model, expected):
    config = Params.model_validate({"llm": {"model": model}, "generate": {"kinds": kinds}})
    assert weights_of(config) == expected


def test_the_offline_default_plans_what_uniform_weights_planned():
    tasks = {kind: [f"{kind} task {i}" for i in range(5)] for kind in taxonomy.BRAINSTORM_KINDS}
    uniform = Params.model_validate({"generate": {"kinds": UNIFORM}})
    assert Params().generate.kinds == "auto"
    assert [r.messages for r in plan_requests(Params(), tasks)] == [r.messages for r in plan_requests(uniform, tasks)]


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("generate", {"kinds": "uniform"}, "generate: kinds must be auto, paper or a mapping of kind to weight"),
        ("generate", {"kinds": {"qa": 1.0}}, "generate: kinds has the unknown kind 'qa'; kinds: short_long, "),
        ("generate", {"kinds": {"sts": -1}}, "generate: kinds gives sts the weight -1; a weight is a number >= 0"),
        ("generate", {"kinds": {"sts": "x"}}, "generate: kinds gives sts the weight 'x'"),
        ("llm", {"max_tokens": "lots"}, "llm: max_tokens must be auto (sized per request) or an integer cap of"),
        ("llm", {"max_tokens": 8}, "llm: max_tokens must be auto"),
        ("llm", {"max_tokens": 512.5}, "llm: max_tokens must be auto"),
        ("llm", {"max_tokens": True}, "llm: max_tokens must be auto"),
    ],
)
def test_bad_kinds_and_max_tokens_are_one_line_errors(tmp_path, section, value, message):
    from synthembed.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({section: value}))  # JSON is YAML
    with pytest.raises(UserError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path}: {message}") and "\n" not in str(error.value)
    for good in ("auto", "paper", {"sts": 1.0}) if section == "generate" else ("auto", 16, 4096):
        Params.model_validate({section: {next(iter(value)): good}})


def test_journal_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"key": "a", "content": "x"}) + "\n" + '{"key": "b", "cont')
    journal = Journal(path)
    assert set(journal.keys()) == {"a"}
    journal.append({"key": "c", "content": "y"})
    assert journal.get("a")["content"] == "x" and journal.get("c")["content"] == "y" and "b" not in journal
    journal.close()
    reopened = Journal(path)
    assert set(reopened.keys()) == {"a", "c"} and reopened.get("c") == {"key": "c", "content": "y"}


def test_kinds_without_brainstormed_tasks_are_skipped_or_refused(tmp_path):
    from synthembed.synth.generate import load_tasks

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"kind": "short_long", "task": "Find reviews of a product."}) + "\n")
    config = Params.model_validate({"brainstorm": {"output": str(tasks)}, "generate": {"num_examples": 30}})
    planned = {r.meta["kind"] for r in plan_requests(config, load_tasks(config))}
    assert planned == {"short_long", "sts", "bitext"}
    only_long_long = {"brainstorm": {"output": str(tasks)}, "generate": {"kinds": {"long_long": 1.0}}}
    with pytest.raises(UserError, match="no task for any weighted kind"):
        load_tasks(Params.model_validate(only_long_long))
    missing = {"brainstorm": {"output": str(tmp_path / "none.jsonl")}}
    with pytest.raises(UserError, match="run `synthembed brainstorm` first"):
        load_tasks(Params.model_validate(missing))


def test_brainstorm_drops_near_duplicate_tasks_per_kind():
    from synthembed.synth.brainstorm import drop_near_duplicates

    rows = [
        {"kind": "short_long", "task": "Retrieve recipes for a dish a user names."},
        {"kind": "short_long", "task": "Retrieve recipes for a dish that a user names."},  # a rephrasing
        {"kind": "short_long", "task": "Find court rulings that cite a given patent."},
        {"kind": "long_long", "task": "Retrieve recipes for a dish that a user names."},  # another kind: kept
    ]
    kept, dropped = drop_near_duplicates(rows, similarity=0.95)
    assert kept == [rows[0], rows[2], rows[3]] and dropped == {"short_long": 1}
    assert drop_near_duplicates(rows, similarity=1.0 + 1e-6)[0] == rows  # nothing is that close
