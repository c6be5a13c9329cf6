"""The whole DVC pipeline in a temporary git repository: repro, an unchanged repro, an experiment, no leaked key.

Real DVC, real git, real MLflow (sqlite), real HTTP through LiteLLM to a local OpenAI-compatible server, a tiny
random decoder as backbone and a tiny BEIR task, so every stage runs for real in a few minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.llm_server import FakeLLMServer

PLANTED_KEY = "sk-planted-4f1c9e2ab7d04e51"
pytestmark = pytest.mark.slow


def _tiny_beir(folder: Path) -> None:
    """Six real SciFact-like documents and three queries, each with one relevant document."""
    docs = {
        "d1": "Vitamin D supplementation lowers the rate of acute respiratory infections.",
        "d2": "Statins reduce cholesterol and cardiovascular events in older adults.",
        "d3": "Regular aerobic exercise improves insulin sensitivity in type 2 diabetes.",
        "d4": "Smoking cessation decreases the risk of lung cancer over time.",
        "d5": "Sleep deprivation impairs working memory and attention.",
        "d6": "High salt intake raises blood pressure in salt-sensitive people.",
    }
    queries = {"q1": "vitamin d prevents colds", "q2": "exercise and diabetes", "q3": "salt and hypertension"}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in docs.items())
    )
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td6\t1\n")


def _labeled(path: Path) -> None:
    rows = [
        ("caffeine improves alertness", "Caffeine intake increases alertness and reaction speed."),
        ("aspirin and heart attacks", "Low-dose aspirin lowers the risk of a first myocardial infarction."),
        ("fiber and colon health", "Dietary fiber is linked to a lower risk of colorectal cancer."),
        ("omega-3 and depression", "Omega-3 fatty acids show modest effects on depressive symptoms."),
        ("air pollution and asthma", "Fine particulate matter exacerbates asthma in children."),
        ("meditation reduces stress", "Mindfulness meditation lowers perceived stress and cortisol."),
    ]
    path.parent.mkdir(parents=True)
    instruction = "Given a scientific claim, retrieve documents that support or refute the claim"
    path.write_text(
        "".join(json.dumps({"instruction": instruction, "query": q, "positive": p}) + "\n" for q, p in rows)
    )


def _run(command: list[str], cwd: Path, env: dict[str, str], stdout_only: bool = False) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return done.stdout if stdout_only else output


@pytest.fixture()
def project(tmp_path: Path, tiny_decoder_dir: Path) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    for item in (".gitignore", "prompts", "src"):
        source = REPO_ROOT / item
        if source.is_dir():
            shutil.copytree(source, repo / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, repo / item)
    _tiny_beir(repo / "data" / "eval" / "tiny")
    _labeled(repo / "data" / "labeled" / "tiny.jsonl")
    return repo


def _params(api_base: str, backbone: Path) -> dict:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["model"].update(backbone=str(backbone), max_seq_length=64, batch_size=8)
    params["llm"].update(model="openai/fake-model", api_base=api_base, max_concurrency=4, timeout_s=30)
    params["brainstorm"].update(requests_per_kind=1)
    params["generate"].update(num_examples=8, corpus="data/eval/tiny", grounded_examples=4)
    params["prepare"].update(labeled=["data/labeled/tiny.jsonl"], mine_negatives=False, validation_fraction=0.0)
    params["train"].update(max_steps=2, batch_size=4, max_seq_length=64, save_steps=1, warmup_steps=0)
    params["evaluate"].update(tasks=["data/eval/tiny"], max_queries=None, max_documents=None)
    params["register"].update(metric="tiny.ndcg_at_10")
    return params


def test_pipeline_repro_experiment_and_no_secret(project: Path, tiny_decoder_dir: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OPENAI_API_KEY": PLANTED_KEY,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with FakeLLMServer() as server:
        (project / "params.yaml").write_text(yaml.safe_dump(_params(server.api_base, tiny_decoder_dir)))
        _run(["synthembed", "pipeline", "--write"], project, env)  # dvc.yaml for this project's paths
        assert "data/labeled/tiny.jsonl" in (project / "dvc.yaml").read_text()
        _run(["git", "init", "-q"], project, env)
        _run(["dvc", "init", "-q"], project, env)
        _run(["git", "add", "-A"], project, env)
        _run(["git", "commit", "-qm", "tiny project"], project, env)

        first = _run(["dvc", "repro"], project, env)
        for stage in ("brainstorm", "generate", "prepare", "train", "evaluate", "evaluate_base", "register"):
            assert f"Running stage '{stage}'" in first
        assert (project / "models" / "embedder" / "modules.json").exists()
        scores = json.loads((project / "metrics" / "eval.json").read_text())
        assert 0.0 <= scores["tiny"]["main_score"] <= 1.0
        register = json.loads((project / "metrics" / "register.json").read_text())
        assert register["promoted"] is True
        plot = ["dvc", "plots", "show", "--show-vega", "per_task_comparison"]
        vega = json.loads(_run(plot, project, env, stdout_only=True))
        bars = {(row["filename"], row["task"], row["model"]) for row in vega["data"]["values"]}
        models = {
            "eval.csv": "embedder",
            "eval_base.csv": tiny_decoder_dir.name,
            "eval_reference.csv": "all-MiniLM-L6-v2",
        }
        rows = ("tiny", "average: Retrieval", "average: overall")  # the task, its category's and the overall average
        assert bars == {(table, row, model) for table, model in models.items() for row in rows}
        requests_after_first = server.total_requests

        second = _run(["dvc", "repro"], project, env)
        assert "Running stage" not in second
        assert server.total_requests == requests_after_first

        _run(
            ["git", "add", "dvc.lock", "metrics/brainstorm.json", "metrics/eval.json", "metrics/train.json"],
            project,
            env,
        )
        _run(["git", "commit", "-qm", "first run"], project, env)
        loss_before = json.loads((project / "metrics" / "train.json").read_text())["final_loss"]
        experiment = _run(["dvc", "exp", "run", "-S", "train.lr=5e-5"], project, env)
        assert "Running stage 'train'" in experiment
        assert "Running stage 'brainstorm'" not in experiment
        assert "Running stage 'evaluate_base'" not in experiment  # baselines are cached
        loss_after = json.loads((project / "metrics" / "train.json").read_text())["final_loss"]
        assert loss_after != loss_before
        diff = _run(["dvc", "metrics", "diff", "--json"], project, env)
        assert "final_loss" in diff
        assert server.total_requests == requests_after_first  # generation came from DVC's cache

    leaked = [
        str(path.relative_to(project))
        for path in project.rglob("*")
        if path.is_file() and ".git" not in path.parts and PLANTED_KEY.encode() in path.read_bytes()
    ]
    assert leaked == []
    assert (project / "mlflow.db").exists()
