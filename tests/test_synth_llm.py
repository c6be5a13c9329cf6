"""brainstorm and generate through LiteLLM over real HTTP to a local OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from llm_server import FakeLLMServer, by_hash

from synthembed.params import Params
from synthembed.pipeline.run import run_stage
from synthembed.synth import taxonomy
from synthembed.synth.generate import iter_requests, load_tasks, plan_requests

PLANTED_KEY = "sk-test-PLANTED-0123456789abcdef"
FAST_RETRIES = {"INITIAL_RETRY_DELAY": "0.01", "JITTER": "0.01"}


@pytest.fixture(autouse=True)
def _fast_backoff_and_key(monkeypatch):
    import litellm.utils

    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
        monkeypatch.setattr(litellm.utils, name, float(value), raising=False)


def _config(server: FakeLLMServer, **llm) -> dict:
    return {
        "llm": {
            "model": "openai/fake-llm",
            "api_base": server.api_base,
            "max_retries": 2,
            "timeout_s": 5.0,
            "max_concurrency": 4,
            **llm,
        },
        "brainstorm": {"tasks_per_request": 5, "requests_per_kind": 1},
        "generate": {"num_examples": 40, "corpus": None},  # grounded generation: tests/test_grounded_generation.py
    }


def _records(path="data/synthetic/examples.jsonl") -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_generate_handles_every_reply_shape_and_reruns_for_free(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    modes = {
        "json": 4,
        "prose": 1,
        "fence": 1,
        "invalid": 1,
        "rate_limit_once": 1,
        "server_error_once": 1,
        "slow_once": 1,
    }
    spread = by_hash(modes)

    def mode(prompt: str) -> str:  # every bitext answer identical: all but one must be dropped as duplicates
        return "duplicate" if "translation retrieval" in prompt else spread(prompt)

    with FakeLLMServer(mode, slow_s=1.5) as server:
        config = Params.model_validate(_config(server, timeout_s=0.75))
        brainstorm = run_stage("brainstorm", config, track=False).metrics
        assert brainstorm["valid"] > 0 and Path("metrics/brainstorm.json").exists()
        tasks = [json.loads(line) for line in Path("data/synthetic/tasks.jsonl").read_text().splitlines()]
        assert {row["kind"] for row in tasks} == set(taxonomy.BRAINSTORM_KINDS)
        assert all(isinstance(row["request"], int) and row["task"] for row in tasks)

        plan = plan_requests(config, load_tasks(config))
        modes_of = Counter(mode(r.messages[-1]["content"]) for r in plan)
        duplicates_by_kind = Counter(r.meta["kind"] for r in plan if mode(r.messages[-1]["content"]) == "duplicate")
        statuses_before = Counter(server.statuses)
        metrics = run_stage("generate", config, track=False).metrics
        statuses = server.statuses - statuses_before
        records = _records()

        # Every record is valid and complete.
        assert records and len(records) == metrics["valid"]
        for record in records:
            assert set(record) == {"kind", "task", "language", "params", "model", "data"}
            assert taxonomy.validate(record["kind"], record["data"]) == (record["data"], None)
            assert list(record["data"]) == list(taxonomy.KEYS[record["kind"]])
            assert record["language"] == "English" or record["kind"] == "bitext"
            assert record["model"] == "fake-llm"
        # Rejections are counted by reason: invalid JSON, and all but one of identical answers.
        assert metrics["rejected_by_reason"].get("no_json", 0) == modes_of["invalid"] > 0
        expected_duplicates = sum(n - 1 for n in duplicates_by_kind.values())
        assert metrics["rejected_by_reason"].get("duplicate", 0) == expected_duplicates > 0
        assert metrics["valid"] + metrics["rejected"] == metrics["planned"] == metrics["requests"] == 40
        assert sum(c.get("valid", 0) for c in metrics["per_kind"].values()) == len(records)
        # The server saw the retries: a 429 and a 503 before success, and a second try after each timeout.
        assert statuses[429] == modes_of["rate_limit_once"] > 0
        assert statuses[503] == modes_of["server_error_once"] > 0
        slow = [r for r in plan if mode(r.messages[-1]["content"]) == "slow_once"]
        assert slow and all(server.received[json.dumps([r.messages[-1]["content"], r.seed])] == 2 for r in slow)

        # Prose and fenced answers were parsed, not rejected.
        assert modes_of["prose"] > 0 and modes_of["fence"] > 0
        assert set(metrics["rejected_by_reason"]) == {"no_json", "duplicate"}
        first_output = Path("data/synthetic/examples.jsonl").read_text()

        # A second run sends nothing and writes the same records; so does one with the journal gone (cache).
        seen = server.total_requests
        again = run_stage("generate", config, track=False).metrics
        assert server.total_requests == seen and again["requests"] == 0 and again["cache_hits"] == 40
        assert Path("data/synthetic/examples.jsonl").read_text() == first_output
        Path(config.llm.cache_dir, "generate.journal.jsonl").unlink()
        cached = run_stage("generate", config, track=False).metrics
        assert server.total_requests == seen and cached["requests"] == 0 and cached["cost_usd"] == 0
        assert Path("data/synthetic/examples.jsonl").read_text() == first_output

    # The planted key reached the server, and nowhere else.
    assert any(
        {k.lower(): v for k, v in h.items()}.get("authorization") == f"Bearer {PLANTED_KEY}"
        for h in server.headers_seen
    )
    captured = capsys.readouterr()
    assert PLANTED_KEY not in captured.out + captured.err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("responses" in str(p) for p in files)  # the disk cache was checked too
    for path in files:
        assert PLANTED_KEY.encode() not in path.read_bytes(), path


def test_budget_stops_cleanly_and_keeps_what_it_has(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with FakeLLMServer() as server:
        # gpt-4o-mini is priced in LiteLLM's cost map, so each answer has a cost.
        config = Params.model_validate(_config(server, model="openai/gpt-4o-mini", max_concurrency=1))
        run_stage("brainstorm", config, track=False)
        spent = json.loads(Path("metrics/brainstorm.json").read_text())["cost_usd"]
        assert spent > 0
        config.llm.budget_usd = spent + 1e-12  # a few answers' worth
        metrics = run_stage("generate", config, track=False).metrics
    assert metrics["budget_exhausted"] is True
    assert 1 <= metrics["requests"] < 40 and metrics["skipped_for_budget"] == 40 - metrics["requests"]
    assert metrics["cost_usd"] >= config.llm.budget_usd - spent
    assert len(_records()) == metrics["valid"] > 0


def _cli(params: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, **FAST_RETRIES, "OPENAI_API_KEY": PLANTED_KEY}
    return subprocess.Popen(
        [sys.executable, "-m", "synthembed.cli", "generate", "--params", str(params)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # two CLI processes start torch and LiteLLM: about 20 s idle, minutes on a loaded machine
def test_sigkill_mid_run_resumes_without_asking_twice(tmp_path, monkeypatch):
    answered_before_kill = 6
    runs = {}
    for name in ("killed", "clean"):
        work = tmp_path / name
        work.mkdir()
        monkeypatch.chdir(work)
        with FakeLLMServer() as server:
            settings = _config(server, max_concurrency=3)
            settings["generate"]["num_examples"] = 16
            run_stage("brainstorm", Params.model_validate(settings), track=False)
            (work / "params.yaml").write_text(yaml.safe_dump(settings))
            journal = work / "data/synthetic/cache/generate.journal.jsonl"
            if name == "killed":
                server.hold_after = sum(server.answered.values()) + answered_before_kill
                process = _cli(work / "params.yaml", work)
                deadline = time.monotonic() + 120
                while not (journal.exists() and len(journal.read_text().splitlines()) >= answered_before_kill):
                    assert process.poll() is None, process.communicate()
                    assert time.monotonic() < deadline, "the run never answered enough requests"
                    time.sleep(0.05)
                process.send_signal(signal.SIGKILL)
                process.wait()
                assert not (work / "data/synthetic/examples.jsonl").exists()
                server.hold_after = None
                server.released.set()
                process = _cli(work / "params.yaml", work)
                out, err = process.communicate(timeout=300)
                assert process.returncode == 0, err
                assert "valid examples" in err and PLANTED_KEY not in out + err
            else:
                run_stage("generate", Params.model_validate(settings), track=False)
            runs[name] = (work / "data/synthetic/examples.jsonl").read_text().splitlines()
            if name == "killed":
                assert max(server.answered.values()) == 1, "an answered prompt was asked again"
                resumed = json.loads((work / "metrics/generate.json").read_text())
                assert resumed["journal_hits"] == answered_before_kill
    assert sorted(runs["killed"]) == sorted(runs["clean"]) and len(runs["clean"]) == 16


def test_bad_language_is_one_line_error(tmp_path):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"generate": {"languages": ["Elvish"], "kinds": {"sts": 1.0}, "corpus": None}})
    )
    result = subprocess.run(
        [sys.executable, "-m", "synthembed.cli", "generate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]] and result.stderr.startswith(
        "error: generate.languages"
    )


def _brainstorm_cli(tmp_path: Path, config: dict):
    from typer.testing import CliRunner

    from synthembed.cli import app

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
    return CliRunner().invoke(app, ["brainstorm", "--params", str(tmp_path / "params.yaml")])


def test_local_server_needs_no_key_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeLLMServer() as server:
        result = _brainstorm_cli(tmp_path, {**_config(server), "brainstorm": {"requests_per_kind": 1}})
    assert result.exit_code == 0, result.output
    assert server.statuses == Counter({200: 4}) and server.total_requests == 4  # no retries, no failures
    assert len(Path("data/synthetic/tasks.jsonl").read_text().splitlines()) > 0


@pytest.mark.parametrize("key", [None, "sk-wrong-key-0123456789"])
def test_a_401_is_one_line_naming_the_variable(tmp_path, monkeypatch, key):
    monkeypatch.chdir(tmp_path)
    if key is None:
        monkeypatch.delenv("OPENAI_API_KEY")
    else:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeLLMServer(api_key="the-right-key") as server:
        result = _brainstorm_cli(tmp_path, {**_config(server), "brainstorm": {"requests_per_kind": 1}})
    last = result.output.strip().splitlines()[-1]  # after the progress bar
    assert result.exit_code == 2 and last.startswith("error: ") and "Traceback" not in result.output, result.output
    assert "OPENAI_API_KEY" in last and "401" in last and (key is None or key not in result.output)
    assert server.statuses[401] <= 4 and server.statuses[200] == 0  # a refused key is not retried


def test_hosted_model_without_a_key_fails_before_sending(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY")
    result = _brainstorm_cli(tmp_path, {"llm": {"model": "openai/gpt-4o-mini"}})
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: llm.model openai/gpt-4o-mini needs an API key: set OPENAI_API_KEY in the environment"
    )


def test_failed_requests_are_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures = {"status_500": 1, "status_502": 1, "status_400": 1, "garbage_body": 1, "no_choices": 1}
    with FakeLLMServer(mode=by_hash({"json": 5, **failures})) as server:
        config = Params.model_validate(_config(server, max_retries=0))
        run_stage("brainstorm", config, track=False)
        metrics = run_stage("generate", config, track=False).metrics
    reasons = metrics["rejected_by_reason"]
    assert metrics["valid"] > 0 and metrics["valid"] + metrics["rejected"] == 40
    assert reasons.get("server_error", 0) > 0 and reasons.get("bad_request", 0) > 0
    assert set(reasons) <= {"server_error", "bad_request", "duplicate"}


@pytest.mark.parametrize(
    ("llm", "message"),
    [
        ({"api_base": "http://127.0.0.1:{closed}/v1"}, "nothing answers at http://127.0.0.1:"),
        ({"model": "nonsense-provider/x"}, "llm.model nonsense-provider/x: LiteLLM knows no such provider"),
    ],
)
def test_configuration_failures_are_one_line_naming_the_fix(tmp_path, monkeypatch, llm, message):
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    config = {"llm": {"model": "openai/x", "max_retries": 1, **llm}, "brainstorm": {"requests_per_kind": 1}}
    config["llm"] = {key: str(value).format(closed=closed) for key, value in config["llm"].items()}
    result = _brainstorm_cli(tmp_path, config)
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert last.startswith(f"error: {message}")
    assert not Path("data/synthetic/tasks.jsonl").exists()


def test_a_run_where_every_request_fails_is_an_error_not_an_empty_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with FakeLLMServer(mode=lambda prompt: "slow", slow_s=1.0) as server:  # hangs past the client's time-out
        result = _brainstorm_cli(tmp_path, {**_config(server, timeout_s=0.2, max_retries=0)})
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 2 and last.startswith("error: brainstorm: none of the 4 requests gave a usable answer")
    assert "4 timeout" in last and not Path("data/synthetic/tasks.jsonl").exists()


def test_a_high_rejection_rate_is_a_warning_in_the_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with FakeLLMServer(mode=by_hash({"json": 1, "invalid": 3})) as server:
        config = _config(server, warn_rejected_fraction=0.2)
        run_stage("brainstorm", Params.model_validate(config), track=False)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(config))
        from typer.testing import CliRunner

        from synthembed.cli import app

        result = CliRunner().invoke(app, ["generate"])
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning: "))
    assert "of the answers were rejected (above llm.warn_rejected_fraction 0.2)" in warning and "no_json" in warning


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("api_base", "http://bob:hunter2secret@127.0.0.1:9/v1"),
        ("api_base", "http://hunter2secrettoken@127.0.0.1:9/v1"),
        ("fallbacks", ["openai/x?key=gsk_hunter2secret0123"]),
    ],
)
def test_credentials_in_params_are_refused_before_anything_is_recorded(tmp_path, monkeypatch, key, value):
    monkeypatch.chdir(tmp_path)
    result = _brainstorm_cli(tmp_path, {"llm": {"model": "openai/x", key: value}})
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'params.yaml'}: llm.{key}{'.0' if key == 'fallbacks' else ''}: credentials belong in "
        "environment variables (e.g. OPENAI_API_KEY), never in params.yaml"
    ]
    assert "hunter2" not in result.output and not (tmp_path / "mlflow.db").exists()


def _spent(costs: dict[str, dict]) -> float:
    """What the kinds of ``cost_per_kind`` (or shapes of ``cost_per_shape``) cost in all, answers of every outcome."""
    return sum(c["accepted_cost_usd"] + sum(c["rejected_cost_usd"].values()) for c in costs.values())


def test_cost_per_accepted_example_adds_up_to_the_runs_cost(tmp_path, monkeypatch):
    """gpt-4o-mini is in LiteLLM's price table and the server reports usage, so every answer has a cost: per kind
    and grounded shape, cost_per_accepted_usd x accepted is all that the kind cost, rejected answers included,
    and the kinds add up to the run's cost_usd. A re-run answered from the journal costs nothing."""
    monkeypatch.chdir(tmp_path)
    Path("data/synthetic").mkdir(parents=True)
    tasks = [{"kind": "short_long", "task": f"Given a question about topic {n}, retrieve answers."} for n in range(3)]
    Path("data/synthetic/tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in tasks))
    finding = "reports that vitamin D taken daily for a year cut respiratory infections in older adults"
    documents = [f"Trial {n} {finding}." for n in range(3)] + [f"Trial {n} {finding}. " * 3 for n in range(3)]
    Path("corpus.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in documents))

    def mode(prompt: str) -> str:  # bitext answers all alike (duplicates but one), topic 0's cut short (no_json)
        return "duplicate" if "translation retrieval" in prompt else "invalid" if "topic 0" in prompt else "json"

    with FakeLLMServer(mode) as server:
        settings = _config(server, model="openai/gpt-4o-mini")
        kinds = {"short_long": 1.0, "bitext": 1.0}
        settings["generate"] = {"num_examples": 16, "kinds": kinds, "corpus": "corpus.jsonl"}
        config = Params.model_validate(settings)
        metrics = run_stage("generate", config, track=False).metrics
        again = run_stage("generate", config, track=False).metrics

    costs, grounded = metrics["cost_per_kind"], metrics["grounded"]["cost_per_shape"]
    assert metrics["cost_usd"] > 0 and metrics["unpriced_replies"] == 0
    assert set(costs["bitext"]["rejected_cost_usd"]) == {"duplicate"}
    assert costs["short_long"]["rejected_cost_usd"]["no_json"] > 0
    for kind, cost in (costs | grounded).items():
        assert cost["accepted"] == (metrics["per_kind"] | metrics["grounded"]["per_shape"])[kind]["valid"] > 0
        assert cost["cost_per_accepted_usd"] * cost["accepted"] == pytest.approx(_spent({kind: cost}), abs=1e-7)
    per_accepted = sum(c["cost_per_accepted_usd"] * c["accepted"] for c in costs.values())
    assert per_accepted == pytest.approx(metrics["cost_usd"], abs=1e-7) and _spent(costs) == pytest.approx(per_accepted)
    assert set(grounded) == {"grounded_short_long", "grounded_short_short"} and metrics["grounded"]["cost_usd"] > 0
    assert _spent(grounded) == pytest.approx(metrics["grounded"]["cost_usd"], abs=1e-7)
    assert again["journal_hits"] == 16 and again["cost_usd"] == 0 == _spent(again["cost_per_kind"])
    assert [c["accepted"] for c in again["cost_per_kind"].values()] == [c["accepted"] for c in costs.values()]


def test_the_client_takes_planned_requests_as_it_sends_them(tmp_path, monkeypatch):
    """A paper-scale plan is never made whole: when the first answer arrives, the planner has made no more
    requests than there are slots in flight, and every request is still answered, in plan order on disk."""
    from synthembed.synth.client import LLMClient

    monkeypatch.chdir(tmp_path)
    with FakeLLMServer(latency_s=0.05) as server:
        config = Params.model_validate(_config(server, max_concurrency=3))
        run_stage("brainstorm", config, track=False)
        made, made_at_first_answer, answered = [], [], []

        def planner():
            for request in iter_requests(config, load_tasks(config)):
                made.append(request)
                yield request

        def on_reply(reply):
            if not answered:
                made_at_first_answer.append(len(made))
            answered.append(reply.request.meta["index"])

        stats = LLMClient(config.llm, "generate").run(planner(), on_reply, "generate", total=40)
    assert made_at_first_answer == [3] and len(made) == 40 and sorted(answered) == list(range(40))
    assert stats.requests == 40
    run_stage("generate", config, track=False)  # the stage over the same plan: every answer from the journal
    plan = plan_requests(config, load_tasks(config))
    assert [(r["kind"], r["params"]) for r in _records()] == [(r.meta["kind"], r.meta["params"]) for r in plan]
