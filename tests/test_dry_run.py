"""``brainstorm --dry-run`` and ``generate --dry-run`` through the real CLI: the planned requests, their tokens and
their cost from LiteLLM's price table, with nothing sent and nothing written."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import litellm
import pytest
import yaml
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.params import load_params
from synthembed.synth.brainstorm import brainstorm_requests
from synthembed.synth.client import Request
from synthembed.synth.estimate import estimate
from synthembed.synth.generate import load_tasks, plan_requests
from synthembed.synth.grounded import load_documents, plan_grounded

PRICED = "openai/gpt-4o-mini"
TASKS = {
    "short_long": ["Given a gardening question, retrieve articles that answer it.", "Given a symptom, find guides."],
    "long_short": ["Classify a product review by the main complaint it raises."],
    "short_short": ["Given a product name, retrieve compatible accessories."],
    "long_long": ["Given a news article, retrieve articles on the same event."],
}
DOCUMENTS = [
    "Vitamin D supplementation reduced acute respiratory infections in a trial of older adults living at home, "
    "with the largest effect among those who started with low serum levels and took daily doses for a year.",
    "Mean pooling beats last-token pooling for small decoders.",
    "A survey of contrastive learning objectives for text embeddings, from in-batch negatives to hard negatives "
    "mined with a reference encoder, and how the temperature of the softmax changes what the model learns.",
]


def _folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict, tasks: bool = True) -> None:
    """``tmp_path`` as the working folder of a run: its params.yaml, the brainstormed tasks, a small corpus."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    Path("params.yaml").write_text(yaml.safe_dump(params))
    Path("corpus.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in DOCUMENTS))
    if tasks:
        Path("data/synthetic").mkdir(parents=True)
        rows = [{"kind": kind, "task": task, "request": 0} for kind, texts in TASKS.items() for task in texts]
        Path("data/synthetic/tasks.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def _dry_run(command: str):
    result = CliRunner().invoke(app, [command, "--dry-run", "--params", "params.yaml"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def _printed_rows(output: str) -> dict[str, list[str]]:
    """The table's rows by kind (and total): requests, prompt tokens, completion tokens, online and batch USD."""
    lines = output.splitlines()
    start = next(number for number, line in enumerate(lines) if line.startswith("kind "))
    rows = {}
    for line in lines[start + 1 :]:
        kind, *cells = line.split()
        rows[kind] = cells
        if kind == "total":
            return rows
    raise AssertionError(f"no total line in {output}")


def _expected_rows(requests: list[Request], model: str, price: dict | None) -> dict[str, list[str]]:
    """What the table must say, worked out here from the planned requests and LiteLLM's own table."""
    by_kind: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        by_kind[request.meta["kind"]].append(request)
    by_kind["total"] = requests
    rows = {}
    for kind, planned in by_kind.items():
        prompt = sum(litellm.token_counter(model=model, messages=request.messages) for request in planned)
        completion = sum(request.max_tokens for request in planned)
        costs = ["unpriced", "unpriced"]
        if price is not None:
            online = prompt * price["input_cost_per_token"] + completion * price["output_cost_per_token"]
            batch = prompt * price["input_cost_per_token_batches"] + completion * price["output_cost_per_token_batches"]
            costs = [f"{online:.4f}", f"{batch:.4f}"]
        rows[kind] = [str(len(planned)), f"{prompt:,}", f"{completion:,}", *costs]
    return rows


def test_generate_dry_run_prints_the_planned_requests_tokens_and_cost(tmp_path, monkeypatch) -> None:
    params = {
        "llm": {"model": PRICED, "max_tokens": "auto"},
        "generate": {"num_examples": 30, "corpus": "corpus.jsonl", "grounded_examples": 3},
    }
    _folder(tmp_path, monkeypatch, params)
    config = load_params("params.yaml")
    planned = plan_requests(config, load_tasks(config)) + plan_grounded(config, load_documents(config))
    before = _files(tmp_path)

    result = _dry_run("generate")

    price = litellm.model_cost["gpt-4o-mini"]
    expected = _expected_rows(planned, PRICED, price)
    assert _printed_rows(result.stdout) == expected
    assert {"grounded_short_long", "grounded_short_short", "short_long"} <= set(expected)
    assert "a ceiling" in result.stdout and "prices per 1M tokens" in result.stdout
    assert result.stderr.strip() == f"note: a real run of {PRICED} needs OPENAI_API_KEY in the environment (not set)"
    assert _files(tmp_path) == before  # no metrics/, no cache, no mlflow.db
    # The numbers behind the table, unrounded: tokens x the table's online and batch prices.
    found = estimate(planned, config.llm)
    for row in (*found.kinds, found.total):
        assert row.online_usd == pytest.approx(
            row.prompt_tokens * price["input_cost_per_token"] + row.completion_tokens * price["output_cost_per_token"]
        )
        assert row.batch_usd == pytest.approx(
            row.prompt_tokens * price["input_cost_per_token_batches"]
            + row.completion_tokens * price["output_cost_per_token_batches"]
        )
    assert found.total.completion_tokens == sum(request.max_tokens for request in planned)


def test_brainstorm_dry_run_plans_each_kind_as_a_run_would(tmp_path, monkeypatch) -> None:
    params = {"llm": {"model": PRICED}, "brainstorm": {"kinds": ["short_long", "long_long"], "requests_per_kind": 3}}
    _folder(tmp_path, monkeypatch, params, tasks=False)
    config = load_params("params.yaml")
    before = _files(tmp_path)

    result = _dry_run("brainstorm")

    rows = _printed_rows(result.stdout)
    assert rows == _expected_rows(brainstorm_requests(config), PRICED, litellm.model_cost["gpt-4o-mini"])
    assert [rows[kind][0] for kind in ("long_long", "short_long", "total")] == ["3", "3", "6"]
    assert _files(tmp_path) == before


def test_the_offline_model_is_counted_but_unpriced(tmp_path, monkeypatch) -> None:
    _folder(tmp_path, monkeypatch, {"seed": 7})  # the default llm.model: local/SmolLM2-135M-Instruct
    config = load_params("params.yaml")

    result = _dry_run("brainstorm")

    rows = _printed_rows(result.stdout)
    assert rows == _expected_rows(brainstorm_requests(config), config.llm.model, None)
    assert all(cells[-2:] == ["unpriced", "unpriced"] for cells in rows.values())
    assert "not in LiteLLM's price table" in result.stdout
    assert "note:" not in result.stderr  # the local model needs no key; its cap is its own setting


def test_batch_is_half_of_online_where_the_table_lists_no_batch_price(tmp_path, monkeypatch) -> None:
    model = "deepseek/deepseek-chat"
    assert "input_cost_per_token_batches" not in litellm.model_cost[model], "pick a model without batch prices"
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    _folder(tmp_path, monkeypatch, {"llm": {"model": model}}, tasks=False)
    config = load_params("params.yaml")

    result = _dry_run("brainstorm")

    assert "DEEPSEEK_API_KEY" in result.stderr
    found = estimate(brainstorm_requests(config), config.llm)
    assert found.total.batch_usd == pytest.approx(found.total.online_usd / 2) and found.total.online_usd > 0


def _one_error_line(result) -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_generate_dry_run_needs_the_brainstormed_tasks(tmp_path, monkeypatch) -> None:
    _folder(tmp_path, monkeypatch, {"llm": {"model": PRICED}}, tasks=False)
    result = CliRunner().invoke(app, ["generate", "--dry-run", "--params", "params.yaml"])
    line = _one_error_line(result)
    assert line.startswith("error: data/synthetic/tasks.jsonl not found: run `synthembed brainstorm` first")
    assert not Path("metrics").exists()


@pytest.mark.parametrize(
    ("command", "params", "fragment"),
    [
        ("brainstorm", {"llm": {"budget_usd": -1}}, "llm.budget_usd"),
        ("generate", {"llm": {"model": "nosuchprovider/model"}}, "LiteLLM knows no such provider"),
        ("generate", {"generate": {"corpus": "no-such-corpus.jsonl"}}, "generate.corpus"),
    ],
)
def test_bad_params_are_one_line_in_a_dry_run(tmp_path, monkeypatch, command: str, params: dict, fragment: str) -> None:
    _folder(tmp_path, monkeypatch, {"generate": {"corpus": "corpus.jsonl"}} | params)
    result = CliRunner().invoke(app, [command, "--dry-run", "--params", "params.yaml"])
    assert fragment in _one_error_line(result)


def test_only_the_llm_stages_take_dry_run() -> None:
    import typer.main

    commands = typer.main.get_command(app).commands
    with_dry_run = {name for name, command in commands.items() if any("--dry-run" in p.opts for p in command.params)}
    assert with_dry_run == {"brainstorm", "generate"}
