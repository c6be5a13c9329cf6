"""``llm.mode: batch`` over real HTTP: the local server's OpenAI files and batches API, answers as online."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import litellm
import pytest
import yaml
from llm_server import FakeLLMServer, by_hash

from synthembed.errors import UserError
from synthembed.params import LLMParams, Params
from synthembed.pipeline.run import run_stage
from synthembed.synth import batch
from synthembed.synth.client import LLMClient
from synthembed.synth.generate import plan_requests

POLL = {"SYNTHEMBED_BATCH_POLL_S": "0.05", "OPENAI_API_KEY": "sk-test-not-a-key"}
BODY_KEYS = {"model", "messages", "temperature", "top_p", "max_tokens", "seed", "response_format"}
DOCUMENTS = [
    {"_id": f"d{n}", "title": f"Finding {n}", "text": f"Study {n} measured how {topic} changes over a decade."}
    for n, topic in enumerate(["soil carbon", "river salinity", "bee foraging", "glacier mass"])
]


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch):
    for name, value in POLL.items():
        monkeypatch.setenv(name, value)


def _settings(server: FakeLLMServer, mode: str = "batch", model: str = "openai/fake-llm", **generate) -> dict:
    """sts and bitext need no brainstormed task: generate runs on its own."""
    return {
        "llm": {"model": model, "api_base": server.api_base, "mode": mode, "max_retries": 0, "timeout_s": 5.0},
        "generate": {"kinds": {"sts": 1.0, "bitext": 1.0}, "num_examples": 24, "corpus": None, **generate},
    }


def _generate(settings: dict, work: Path, monkeypatch) -> dict:
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    return run_stage("generate", Params.model_validate(settings), track=False).metrics


def _input_lines(server: FakeLLMServer) -> list[dict]:
    """Every line of every batch-input file the server was sent."""
    return [
        json.loads(line)
        for record in server.batches.values()
        for line in server.files[record["input_file_id"]].decode().splitlines()
    ]


def test_batch_run_writes_what_the_online_run_writes_at_the_batch_price(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "MAX_REQUESTS", 10)  # 24 requests: three batches
    with FakeLLMServer() as server:
        online = _generate(_settings(server, "online", "openai/gpt-4o-mini"), tmp_path / "online", monkeypatch)
        online_answers = dict(server.answered)
        batched = _generate(_settings(server, "batch", "openai/gpt-4o-mini"), tmp_path / "batch", monkeypatch)
    records = {mode: (tmp_path / mode / "data/synthetic/examples.jsonl").read_text() for mode in ("online", "batch")}
    assert records["batch"] == records["online"] and len(records["batch"].splitlines()) == batched["valid"] > 0
    assert server.batches_created == 3 and [b["request_counts"]["total"] for b in server.batches.values()] == [
        10,
        10,
        4,
    ]
    # Each prompt was answered once online and once in a batch.
    assert all(server.answered[prompt] == 2 * count for prompt, count in online_answers.items())
    lines = _input_lines(server)
    assert {line["method"] for line in lines} == {"POST"} and {line["url"] for line in lines} == {batch.ENDPOINT}
    assert all(set(line["body"]) == BODY_KEYS and line["body"]["model"] == "gpt-4o-mini" for line in lines)
    assert len({line["custom_id"] for line in lines}) == 24
    # Same tokens, half the price: LiteLLM's batch rates for gpt-4o-mini.
    assert batched["requests"] == online["requests"] == 24
    assert (batched["prompt_tokens"], batched["completion_tokens"]) == (
        online["prompt_tokens"],
        online["completion_tokens"],
    )
    info = litellm.get_model_info("openai/gpt-4o-mini")
    expected = (
        batched["prompt_tokens"] * info["input_cost_per_token_batches"]
        + batched["completion_tokens"] * info["output_cost_per_token_batches"]
    )
    assert batched["cost_usd"] == pytest.approx(expected, abs=1e-8) and batched["cost_usd"] > 0
    assert batched["cost_usd"] == pytest.approx(online["cost_usd"] / 2, abs=1e-8)
    state = json.loads((tmp_path / "batch/data/synthetic/cache/batches/generate.state.json").read_text())
    assert state == [] and not list((tmp_path / "batch/data/synthetic/cache/batches").glob("*.jsonl"))


def test_error_lines_are_rejected_with_their_reason_and_asked_again_next_run(tmp_path, monkeypatch):
    modes = by_hash({"json": 4, "line_error": 1, "status_400": 1, "rate_limit_once": 1, "invalid": 1})
    with FakeLLMServer(modes) as server:
        settings = _settings(server)
        config = Params.model_validate(settings)
        expected = {"json": 0, "line_error": 0, "status_400": 0, "rate_limit_once": 0, "invalid": 0}
        for request in plan_requests(config, {}):
            expected[modes(request.messages[-1]["content"])] += 1
        assert all(expected.values())
        metrics = _generate(settings, tmp_path, monkeypatch)
        reasons = metrics["rejected_by_reason"]
        assert reasons.get("invalid_request") == expected["line_error"]  # the error object's code
        assert reasons.get("bad_request") == expected["status_400"]
        assert reasons.get("rate_limited") == expected["rate_limit_once"]
        assert reasons.get("no_json") == expected["invalid"]  # answered, then rejected as online
        assert metrics["valid"] + metrics["rejected"] == metrics["requests"] == 24 and server.batches_created == 1
        # Failed lines are not journaled: the next run sends only them, and a 429 passes the second time.
        again = _generate(settings, tmp_path, monkeypatch)
    failed = expected["line_error"] + expected["status_400"] + expected["rate_limit_once"]
    assert server.batches_created == 2 and len(_input_lines(server)) == 24 + failed
    assert again["requests"] == failed and again["journal_hits"] == 24 - failed
    assert (
        "rate_limited" not in again["rejected_by_reason"]
        and again["valid"] == metrics["valid"] + expected["rate_limit_once"]
    )


def test_batch_answers_and_online_answers_share_the_response_cache(tmp_path, monkeypatch):
    with FakeLLMServer() as server:
        first = _generate(_settings(server), tmp_path, monkeypatch)
        output = Path("data/synthetic/examples.jsonl").read_text()
        journal = Path("data/synthetic/cache/generate.journal.jsonl")
        journal.unlink()
        online = _generate(_settings(server, "online"), tmp_path, monkeypatch)
        assert online["requests"] == 0 and online["cache_hits"] == 24 and online["journal_hits"] == 0
        journal.unlink()
        batched = _generate(_settings(server), tmp_path, monkeypatch)
    assert batched["requests"] == 0 and batched["cache_hits"] == 24 and server.batches_created == 1
    assert first["requests"] == 24 and Path("data/synthetic/examples.jsonl").read_text() == output


class Killed(BaseException):
    """The process dies right after the provider created the batch, before the state records its id."""


def test_a_batch_whose_id_was_never_recorded_is_found_by_its_metadata(tmp_path, monkeypatch):
    created = litellm.create_batch

    def create_then_die(**arguments):
        created(**arguments)
        raise Killed

    with FakeLLMServer() as server:
        settings = _settings(server, num_examples=6)
        reference = _generate(_settings(server, "online", num_examples=6), tmp_path / "online", monkeypatch)
        monkeypatch.setattr(litellm, "create_batch", create_then_die)
        with pytest.raises(Killed):
            _generate(settings, tmp_path / "batch", monkeypatch)
        (submission,) = json.loads(Path("data/synthetic/cache/batches/generate.state.json").read_text())
        assert submission["file_id"] and submission["batch_id"] is None and server.batches_created == 1
        monkeypatch.setattr(litellm, "create_batch", created)
        resumed = _generate(settings, tmp_path / "batch", monkeypatch)
    assert server.batches_created == 1 and resumed["requests"] == 6
    (found,) = server.batches.values()
    assert found["metadata"] == {batch.METADATA_KEY: submission["key"]}
    records = [(tmp_path / run / "data/synthetic/examples.jsonl").read_text() for run in ("online", "batch")]
    assert records[0] == records[1] and reference["valid"] == resumed["valid"] == 6


def test_the_budget_caps_the_most_a_submission_can_cost(tmp_path, monkeypatch):
    with FakeLLMServer() as server:
        settings = _settings(server, model="openai/gpt-4o-mini")
        plan = plan_requests(Params.model_validate(settings), {})
        ceilings = [
            batch.batch_cost(
                "openai/gpt-4o-mini",
                litellm.token_counter(model="openai/gpt-4o-mini", messages=r.messages),
                r.max_tokens,
            )
            for r in plan
        ]
        settings["llm"]["budget_usd"] = sum(ceilings[:5]) + ceilings[5] / 2  # five requests' worst case
        metrics = _generate(settings, tmp_path, monkeypatch)
    assert metrics["budget_exhausted"] is True and metrics["requests"] == 5 and metrics["skipped_for_budget"] == 19
    assert len(_input_lines(server)) == 5 and 0 < metrics["cost_usd"] <= settings["llm"]["budget_usd"]


@pytest.mark.parametrize("model", ["local/SmolLM2-135M-Instruct", "anthropic/claude-3-5-haiku-latest"])
def test_batch_mode_needs_a_provider_with_a_batch_api(model):
    with pytest.raises(UserError) as refused:
        LLMClient(LLMParams(model=model, mode="batch"), "generate")
    message = str(refused.value)
    assert message.splitlines() == [message] and model in message and "supported providers: openai" in message


def _cli(work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "synthembed.cli", "generate", "--params", str(work / "params.yaml")],
        cwd=work,
        env={**os.environ, **POLL},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # two CLI processes each start torch and LiteLLM: about 20 s idle
@pytest.mark.parametrize(
    "collected_before_kill",
    [0, 1],
    ids=["killed-while-the-batch-runs", "killed-after-collecting-the-first-batch"],
)
def test_sigkill_resumes_without_a_second_batch_or_a_lost_record(tmp_path, monkeypatch, collected_before_kill):
    """Killed once the examples' batch was created (0), or once it was collected and the grounded requests'
    batch created (1): the restarted run polls what was recorded, creates nothing twice, loses nothing."""
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(document) + "\n" for document in DOCUMENTS))
    with FakeLLMServer() as server:
        settings = _settings(server, num_examples=8, corpus="corpus.jsonl", grounded_examples=4)
        reference = tmp_path / "reference"
        reference.mkdir()
        (reference / "corpus.jsonl").write_text((tmp_path / "corpus.jsonl").read_text())
        _generate({**settings, "llm": {**settings["llm"], "mode": "online"}}, reference, monkeypatch)
        work = tmp_path / "killed"
        work.mkdir()
        (work / "corpus.jsonl").write_text((tmp_path / "corpus.jsonl").read_text())
        (work / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))  # kinds in plan order
        answered_online = sum(server.answered.values())
        server.hold_batches = collected_before_kill
        state = work / "data/synthetic/cache/batches/generate.state.json"
        process = _cli(work)
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the run never created its batch"
            recorded = {entry["batch_id"] for entry in json.loads(state.read_text())} if state.exists() else set()
            if server.batches_created == collected_before_kill + 1 and list(server.batches)[-1] in recorded:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The examples are written once their batch is collected, before the grounded batch is created.
        assert (work / "data/synthetic/examples.jsonl").exists() == bool(collected_before_kill)
        journal = work / "data/synthetic/cache/generate.journal.jsonl"
        assert len(journal.read_text().splitlines()) == 8 * collected_before_kill
        server.hold_batches = None
        process = _cli(work)
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    assert server.batches_created == 2  # one for the examples, one for the grounded requests
    assert sum(server.answered.values()) == answered_online + 12, "a prompt was answered twice"
    for output in ("data/synthetic/examples.jsonl", "data/synthetic/grounded.jsonl"):
        assert (work / output).read_text() == (reference / output).read_text() != ""
    metrics = json.loads((work / "metrics/generate.json").read_text())
    assert metrics["journal_hits"] == 8 * collected_before_kill and metrics["valid"] == 8
    assert metrics["grounded"]["valid"] == 4 and metrics["grounded"]["requests"] == 4
