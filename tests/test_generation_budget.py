"""Per-request output budgets and truncation: each request's max_tokens is sized from its kind and template
parameters (an integer llm.max_tokens caps it), and an answer cut at max_tokens is counted, never written."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean

import pytest
from llm_server import FakeLLMServer, by_hash

from synthembed.params import Params
from synthembed.pipeline.run import run_stage
from synthembed.synth import budget, prompts, taxonomy
from synthembed.synth.generate import load_tasks, plan_requests

TASKS = {kind: [f"Find {kind} texts about topic {i}." for i in range(5)] for kind in taxonomy.BRAINSTORM_KINDS}


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")


def test_the_rule_is_1_4_tokens_a_word_with_a_1_3_margin():
    assert budget.tokens(100) == 182 and budget.tokens(1) == 2
    assert budget.tokens(100, english=False) == 364


def test_each_kind_gets_room_for_what_its_prompt_asks():
    def size(kind: str, language: str = "English", **params) -> int:
        return budget.answer_tokens(kind, {"language": language, **params})

    query = {"query_length": "5 to 15 words"}
    # Two documents of at least 500 words: over 1,400 tokens at 1.4 tokens a word, before any margin.
    assert size("short_long", num_words=500, **query) > 2 * 500 * budget.TOKENS_PER_WORD * budget.MARGIN
    long_docs = [size("short_long", num_words=n, **query) for n in taxonomy.PARAMETER_SPACES["short_long"]["num_words"]]
    assert long_docs == sorted(set(long_docs))  # strictly more room for longer documents
    inputs = [size("long_short", num_words=n) for n in taxonomy.PARAMETER_SPACES["long_short"]["num_words"]]
    assert inputs == sorted(inputs) and inputs[-1] > 200 * budget.TOKENS_PER_WORD * budget.MARGIN
    assert size("long_long") > 2 * 300 * budget.TOKENS_PER_WORD * budget.MARGIN
    units = [size("sts", unit=unit) for unit in ("phrase", "sentence", "passage")]
    assert units == sorted(set(units)) and size("short_short") < size("long_long")
    assert size("short_short", language="German") > size("short_short")
    bitext = {"unit": "sentence", "src_lang": "English", "tgt_lang": "German"}
    assert budget.answer_tokens("bitext", bitext) > size("sts", unit="sentence")
    assert budget.task_list_tokens(20) > 20 * budget.SENTENCE_WORDS * budget.TOKENS_PER_WORD


def test_long_long_words_are_what_its_template_asks():
    text = prompts.render("generate", "long_long", task="Match reports.", language="English")
    assert text.count(f"at least {budget.LONG_LONG_WORDS} words") == 2


@pytest.mark.parametrize("cap", ["auto", 256])
def test_each_request_is_sent_its_size_or_the_cap(cap):
    config = Params.model_validate({"llm": {"max_tokens": cap}, "generate": {"num_examples": 300}})
    for request in plan_requests(config, TASKS):
        size = budget.answer_tokens(request.meta["kind"], request.meta["params"])
        assert request.meta["answer_tokens"] == size
        assert request.max_tokens == (size if cap == "auto" else min(size, cap))
    sizes = {r.max_tokens for r in plan_requests(config, TASKS)}
    assert (max(sizes) > 1300) if cap == "auto" else (max(sizes) == 256 and min(sizes) < 256)


class CuttingServer(FakeLLMServer):
    """The test server, but some answers stop at max_tokens as a hosted model's do (``finish_reason: length``,
    the JSON cut or, as the offline decoder writes it, complete); it records each request's max_tokens."""

    def __init__(self, cut) -> None:
        super().__init__()
        self.cut = cut
        self.max_tokens: dict[str, int] = {}

    def respond(self, body, headers):
        status, payload = super().respond(body, headers)
        prompt = body["messages"][-1]["content"]
        self.max_tokens[prompt] = body.get("max_tokens") or body.get("max_completion_tokens")
        how = self.cut(prompt)
        if status == 200 and how != "whole":
            choice = payload["choices"][0]
            choice["finish_reason"] = "length"
            if how == "broken":
                choice["message"]["content"] = choice["message"]["content"][:20]
        return status, payload


def _config(server: FakeLLMServer, **llm) -> Params:
    return Params.model_validate(
        {
            "llm": {"model": "openai/fake-llm", "api_base": server.api_base, "max_retries": 0, **llm},
            "brainstorm": {"tasks_per_request": 5, "requests_per_kind": 1},
            "generate": {"num_examples": 40, "corpus": None},
        }
    )


def test_truncated_answers_are_counted_by_kind_and_not_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spread = by_hash({"whole": 3, "broken": 1, "complete": 1})

    def cut(prompt: str) -> str:
        return "whole" if prompt.startswith("Brainstorm") else spread(prompt)

    with CuttingServer(cut) as server:
        config = _config(server, max_tokens="auto")
        run_stage("brainstorm", config, track=False)
        plan = plan_requests(config, load_tasks(config))
        metrics = run_stage("generate", config, track=False).metrics
        cut_kinds = Counter(r.meta["kind"] for r in plan if cut(r.messages[-1]["content"]) != "whole")
        assert sum(cut_kinds.values()) > 0 and any(cut(r.messages[-1]["content"]) == "complete" for r in plan)

        # Cut answers are rejected as truncated (not no_json, not valid), per kind, and nothing else is.
        assert metrics["rejected_by_reason"] == {"truncated": sum(cut_kinds.values())}
        assert {k: c.get("rejected_truncated", 0) for k, c in metrics["per_kind"].items()} == {
            k: cut_kinds[k] for k in metrics["per_kind"]
        }
        records = [json.loads(line) for line in Path(config.generate.output).read_text().splitlines()]
        assert len(records) == metrics["valid"] == 40 - sum(cut_kinds.values())
        # Each request was sent its own budget, and the metrics show the mean per kind.
        assert all(server.max_tokens[r.messages[-1]["content"]] == r.max_tokens for r in plan)
        by_kind = defaultdict(list)
        for request in plan:
            by_kind[request.meta["kind"]].append(request.max_tokens)
        assert metrics["max_tokens_by_kind"] == {k: round(mean(v), 1) for k, v in sorted(by_kind.items())}
        assert metrics["capped_requests"] == 0 and metrics["kind_weights"]["short_long"] > 0.3  # the paper's mix
        # The raw answers were journaled with their finish reason; re-runs from journal and cache count alike.
        journal = Path(config.llm.cache_dir, "generate.journal.jsonl")
        reasons = Counter(json.loads(line)["finish_reason"] for line in journal.read_text().splitlines())
        assert reasons == Counter({"length": sum(cut_kinds.values()), "stop": metrics["valid"]})
        seen = server.total_requests
        again = run_stage("generate", config, track=False).metrics
        assert again["rejected_by_reason"] == metrics["rejected_by_reason"] and again["journal_hits"] == 40
        journal.unlink()
        cached = run_stage("generate", config, track=False).metrics
        assert cached["rejected_by_reason"]["truncated"] == sum(cut_kinds.values()) and cached["cache_hits"] == 40
        assert server.total_requests == seen


def test_a_cap_below_a_hosted_models_budget_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with CuttingServer(lambda prompt: "whole") as server:
        capped = _config(server, max_tokens=256)
        run_stage("brainstorm", capped, track=False)
        result = run_stage("generate", capped, track=False)
        assert max(server.max_tokens.values()) == 256
        uncapped = run_stage("generate", _config(server, max_tokens="auto"), track=False)
    assert 0 < result.metrics["capped_requests"] < 40 and max(server.max_tokens.values()) > 256
    (warning,) = [line for line in result.warnings if "llm.max_tokens" in line]
    assert warning.startswith(f"llm.max_tokens 256 is below the budget of {result.metrics['capped_requests']} ")
    assert "llm.max_tokens: auto" in warning and uncapped.metrics["capped_requests"] == 0
    assert not [line for line in uncapped.warnings if "llm.max_tokens" in line]
