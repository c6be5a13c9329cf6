"""MLflow on a real sqlite store: champion logic, models:/ references, stage runs, mlflow server, secrets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from synthembed.cli import app
from synthembed.errors import UserError
from synthembed.params import ModelParams, Params
from synthembed.pipeline.run import run_stage
from synthembed.tracking import (
    download_model,
    hash_inputs,
    metric_value,
    numeric_metrics,
    run_register,
    stage_run,
    tracking_uri,
)

FAKE_KEY = "sk-fake-test-9f8e7d6c5b4a39281706"
TEXTS = ["A protein folds into its native shape.", "The stock market fell sharply today."]


def _config(work: Path, score: float | None = None) -> Params:
    config = Params()
    config.register.model = str(work / "models" / "embedder")
    config.mlflow.experiment = "synthembed-test"
    config.register.metric = "SciFact.ndcg_at_10"  # the score the evaluation files written below hold
    if score is not None:
        (work / "metrics").mkdir(exist_ok=True)
        (work / "metrics" / "eval.json").write_text(json.dumps({"SciFact": {"main_score": score, "ndcg_at_10": score}}))
    return config


def _register(config: Params, work: Path) -> dict:
    """The register stage as the pipeline runs it (in its own MLflow run), on ``work``'s files."""
    metrics, scores = work / "metrics" / "register.json", work / "metrics" / "eval.json"
    return run_stage("register", config, metrics=metrics, scores=str(scores)).metrics


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A sqlite tracking store in tmp (made by the first run); a fake API key planted in the environment."""
    work = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        mp.setenv("SYNTHEMBED_CACHE", str(work / "cache"))
        mp.setenv("OPENAI_API_KEY", FAKE_KEY)
        yield {"work": work, "uri": os.environ["MLFLOW_TRACKING_URI"]}


@pytest.fixture(scope="module")
def registry(store, tiny_decoder_dir: Path):
    """A small decoder embedder registered with scores 0.5, 0.6, 0.6, 0.4: first, better, equal, worse."""
    from synthembed.encoder import Embedder

    work = store["work"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store["uri"])
        mp.setenv("OPENAI_API_KEY", FAKE_KEY)
        embedder = Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32"))  # compared exactly below
        embedder.save(work / "models" / "embedder")
        original = embedder.encode(TEXTS)
        results = [_register(_config(work, score), work) for score in (0.5, 0.6, 0.6, 0.4)]
    return {**store, "results": results, "original": original}


def _client(store):
    import mlflow

    return mlflow.MlflowClient(store["uri"])


@pytest.mark.slow
def test_champion_moves_only_on_strictly_higher_score(registry) -> None:
    results = registry["results"]
    assert [r["version"] for r in results] == [1, 2, 3, 4]
    assert [r["promoted"] for r in results] == [True, True, False, False]  # first, better, equal, worse
    assert [r["champion_score"] for r in results] == [None, 0.5, 0.6, 0.6]
    assert results[2]["reason"] == "0.6 <= 0.6"
    champion = _client(registry).get_model_version_by_alias("synthembed", "champion")
    assert int(champion.version) == 2
    assert champion.tags["score.SciFact.ndcg_at_10"] == "0.6"
    written = json.loads((registry["work"] / "metrics" / "register.json").read_text())
    assert written == results[-1]
    run = _client(registry).get_run(champion.run_id)
    assert run.data.metrics == {"score": 0.6, "champion_score": 0.5, "promoted": 1.0, "version": 2.0,
                                "champion_version": 1.0}  # fmt: skip
    assert run.data.tags["synthembed.stage"] == "register"


@pytest.mark.slow
def test_scores_from_different_subsets_or_precisions_do_not_move_the_champion(registry) -> None:
    import mlflow

    work = registry["work"]

    def register(score: float, documents: int, precision: str = "fp32") -> dict:
        config = _config(work)
        config.register.model_name = "synthembed-subsets"
        subset = {"n_queries": 100, "n_documents": documents}
        scores = {"SciFact": {"ndcg_at_10": score, "subset": subset, "precision": precision}}
        (work / "metrics" / "eval.json").write_text(json.dumps(scores))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", registry["uri"])
            return _register(config, work)

    first, easier, alike = register(0.5, 250), register(0.9, 100), register(0.6, 250)
    assert first["promoted"]
    assert first["scored_on"] == '{"data": {"n_documents": 250, "n_queries": 100}, "precision": "fp32"}'
    assert not easier["promoted"] and easier["reason"].startswith("not comparable: champion version 1 was scored on")
    assert alike["promoted"] and alike["reason"] == "0.6 > 0.5"
    in_bf16 = register(0.95, 250, precision="bf16")  # same data, another precision: not comparable either
    assert not in_bf16["promoted"] and '"precision": "fp32"' in in_bf16["reason"]
    champion = mlflow.MlflowClient(registry["uri"]).get_model_version_by_alias("synthembed-subsets", "champion")
    assert int(champion.version) == 3


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["models:/synthembed@champion", "models:/synthembed/1"])
def test_models_reference_loads_and_embeds_like_the_original(registry, reference, monkeypatch) -> None:
    from sentence_transformers import SentenceTransformer

    from synthembed.encoder.references import resolve_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    monkeypatch.setenv("SYNTHEMBED_CACHE", str(registry["work"] / "cache"))
    path = resolve_model(reference)
    assert (path / "modules.json").exists()
    assert download_model(reference) == path  # downloaded once, then served from the cache
    run_id = _client(registry).get_model_version("synthembed", "1").run_id
    assert (download_model(f"runs:/{run_id}/model") / "modules.json").exists()
    vectors = SentenceTransformer(str(path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, registry["original"], atol=1e-5)
    fp32 = registry["work"] / "fp32.yaml"
    fp32.write_text("model: {dtype: fp32}\n")
    result = CliRunner().invoke(app, ["embed", "--model", reference, "--params", str(fp32), TEXTS[0]])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout.strip().splitlines()[-1])["embedding"]
    np.testing.assert_allclose(printed, registry["original"][0], atol=1e-5)


@pytest.mark.slow
def test_unknown_references_are_one_line_user_errors(registry, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    with pytest.raises(UserError, match=r"has no alias 'nope' \(aliases: champion\)"):
        download_model("models:/synthembed@nope")
    with pytest.raises(UserError, match=r"has no version 9 \(latest: 4\)"):
        download_model("models:/synthembed/9")
    with pytest.raises(UserError, match=r"no registered model 'other'.*registered: synthembed"):
        download_model("models:/other@champion")
    with pytest.raises(UserError, match="no MLflow run 'abc123'"):
        download_model("runs:/abc123/model")
    run_id = _client(registry).get_model_version("synthembed", "1").run_id
    with pytest.raises(UserError, match=f"cannot download runs:/{run_id}/nope"):
        download_model(f"runs:/{run_id}/nope")
    result = CliRunner().invoke(app, ["embed", "--model", "models:/synthembed@nope", "text"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: registered model 'synthembed' has no alias 'nope' (aliases: champion)"
    ]


def test_missing_store_is_not_created_by_a_lookup(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(UserError, match="no MLflow store at"):
        download_model("models:/synthembed@champion")
    assert not (tmp_path / "none.db").exists()


def test_register_input_errors(tmp_path, minilm_dir) -> None:
    config, scores = _config(tmp_path), str(tmp_path / "metrics" / "eval.json")
    with pytest.raises(UserError, match="is not a SentenceTransformer folder"):
        run_register(config, config.register.model, scores)
    with pytest.raises(UserError, match="eval.json not found; run `synthembed evaluate` first"):
        run_register(config, str(minilm_dir), scores)


def test_metric_lookup() -> None:
    scores = {"SciFact": {"ndcg_at_10": 0.61, "note": "x"}}
    assert metric_value(scores, "SciFact.ndcg_at_10", "eval.json") == 0.61
    with pytest.raises(UserError, match=r"'NFCorpus.ndcg_at_10' not found in eval.json: the top level has SciFact"):
        metric_value(scores, "NFCorpus.ndcg_at_10", "eval.json")
    with pytest.raises(UserError, match="SciFact has ndcg_at_10, note"):
        metric_value(scores, "SciFact.map", "eval.json")
    with pytest.raises(UserError, match="is 'x', not a number"):
        metric_value(scores, "SciFact.note", "eval.json")


def test_register_cli_reports_a_bad_metric_in_one_line(tmp_path, store, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the pipeline's paths: metrics/eval.json
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    (tmp_path / "models" / "embedder").mkdir(parents=True)
    (tmp_path / "models" / "embedder" / "modules.json").write_text("[]")
    config = _config(tmp_path, score=0.5)
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps({**config.model_dump(mode="json"), "register": {**config.register.model_dump(), "metric": "X.y"}})
    )
    result = CliRunner().invoke(app, ["register", "--params", str(params)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: register.metric 'X.y' not found in metrics/eval.json: the top level has SciFact"
    ]


def test_tracking_uri_prefers_the_environment(monkeypatch) -> None:
    config = Params()
    config.mlflow.tracking_uri = "sqlite:///elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(config) == "sqlite:///elsewhere.db"
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(config) == "http://127.0.0.1:5000"


def test_params_reject_tracking_credentials(tmp_path) -> None:
    from synthembed.params import load_params

    params = tmp_path / "params.yaml"
    params.write_text("mlflow:\n  tracking_uri: https://alice:hunter22@mlflow.example.com\n")
    with pytest.raises(UserError, match="credentials belong in MLFLOW_TRACKING_USERNAME/PASSWORD"):
        load_params(params)


def test_numeric_metrics_flatten_and_skip_text() -> None:
    nested = {
        "SciFact": {"main_score": 0.6, "ndcg_at_10": 0.5},
        "model": "x",
        "n": 3,
        "ok": True,
        "none": None,
    }
    assert numeric_metrics(nested) == {
        "SciFact.main_score": 0.6,
        "SciFact.ndcg_at_10": 0.5,
        "n": 3.0,
        "ok": 1.0,
    }


def test_stage_run_logs_sections_metrics_and_provenance_tags(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    monkeypatch.delenv("SYNTHEMBED_PIPELINE_ID", raising=False)
    monkeypatch.setenv("DVC_STAGE", "train@smoke")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"query": "q"}\n')
    curve = tmp_path / "loss.json"
    curve.write_text("[1.0, 0.5]")
    config = _config(tmp_path)
    with stage_run(config, "train", sections=["train", "lora", "seed"], inputs=[data]) as run:
        logged = run.log_metrics({"SciFact": {"main_score": 0.6, "ndcg_at_10": 0.6}, "model": "x"})
        assert run.log_artifact(curve)
    assert logged == {"SciFact.main_score": 0.6, "SciFact.ndcg_at_10": 0.6}
    client = _client(store)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.info.run_name == "train"
    assert stored.data.metrics == logged
    assert stored.data.params["train.lr"] == str(config.train.lr)
    assert stored.data.params["lora.target_modules"] == "all-linear"
    assert stored.data.params["seed"] == "42"
    assert not any(key.startswith("model.") for key in stored.data.params)
    tags = stored.data.tags
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["dvc.stage"] == "train@smoke" and tags["synthembed.stage"] == "train"
    assert tags["synthembed.inputs_hash"] == hash_inputs([data])
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["loss.json"]

    # Same commit and params: the same pipeline id; other params or an explicit id: another.
    with stage_run(config, "evaluate") as same:
        pass
    config.train.lr = 5e-5
    with stage_run(config, "evaluate") as variant:
        pass
    monkeypatch.setenv("SYNTHEMBED_PIPELINE_ID", "repro-42")
    with stage_run(config, "evaluate") as explicit:
        pass
    ids = [client.get_run(r.run_id).data.tags["synthembed.pipeline_id"] for r in (run, same, variant, explicit)]
    assert ids[0] == ids[1] != ids[2] and ids[3] == "repro-42"


def test_inputs_hash_follows_content(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("one")
    before = hash_inputs([tmp_path])
    (tmp_path / "a.txt").write_text("two")
    assert hash_inputs([tmp_path]) != before
    assert hash_inputs([tmp_path / "missing"]) != hash_inputs([])


def test_stage_run_marks_a_failed_stage(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    with pytest.raises(RuntimeError), stage_run(_config(tmp_path), "prepare") as run:
        raise RuntimeError("boom")
    assert _client(store).get_run(run.run_id).info.status == "FAILED"


def test_a_stage_run_puts_the_global_tracking_uri_back(tmp_path, monkeypatch) -> None:
    """MLflow's global URI (and the MLFLOW_TRACKING_URI it writes) is the stage's only while its run lasts."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = _config(tmp_path)
    config.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'own.db'}"
    before = mlflow.get_tracking_uri()
    with stage_run(config, "prepare") as run:
        assert mlflow.get_tracking_uri() == config.mlflow.tracking_uri  # the fluent API logs to the stage's store
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.MlflowClient(config.mlflow.tracking_uri).get_run(run.run_id).info.status == "FINISHED"
    with pytest.raises(RuntimeError), stage_run(config, "prepare"):
        raise RuntimeError("boom")
    assert mlflow.get_tracking_uri() == before and "MLFLOW_TRACKING_URI" not in os.environ
    # The user's MLFLOW_TRACKING_URI is theirs: still set, unchanged, after the run.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'users.db'}")
    with stage_run(config, "prepare"):
        pass
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'users.db'}"


@pytest.mark.slow
def test_planted_api_key_never_reaches_mlflow(registry, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    leaky = tmp_path / "leaky.txt"
    leaky.write_text(f"Authorization: Bearer {FAKE_KEY}\n")
    config = _config(tmp_path)
    config.evaluate.results_dir = f"metrics/{FAKE_KEY}"  # a careless value: masked, not logged
    with stage_run(config, "evaluate", sections=["evaluate"]) as run:
        assert not run.log_artifact(leaky)
    stored = _client(registry).get_run(run.run_id)
    assert stored.data.params["evaluate.results_dir"] == "metrics/***"
    scanned = 0
    for path in registry["work"].rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
            scanned += 1
    assert scanned > 20 and (registry["work"] / "mlflow.db").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_mlflow_server_answers_the_registry_api(registry, monkeypatch) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", registry["uri"]]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "mlflow server not healthy after 180 s"
            time.sleep(0.5)
        api = f"{base}/api/2.0/mlflow/registered-models"
        model = httpx.get(f"{api}/get", params={"name": "synthembed"}).json()["registered_model"]
        assert model["name"] == "synthembed"
        assert {"alias": "champion", "version": "2"} in model["aliases"]
        version = httpx.get(f"{api}/alias", params={"name": "synthembed", "alias": "champion"}).json()
        assert version["model_version"]["version"] == "2"
        assert {"key": "score.SciFact.ndcg_at_10", "value": "0.6"} in version["model_version"]["tags"]
        missing = httpx.get(f"{api}/alias", params={"name": "synthembed", "alias": "nope"})
        assert missing.status_code == 400 and "alias nope not found" in missing.json()["message"]
        # A client pointed at the server resolves the champion too.
        monkeypatch.setenv("SYNTHEMBED_CACHE", str(registry["work"] / "cache-http"))
        path = download_model("models:/synthembed@champion", uri=base)
        assert (path / "modules.json").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_promotion_rule() -> None:
    from synthembed.tracking.registry import Champion, promotion

    on = '{"data": "full", "precision": "fp32"}'
    rule = {"alias": "champion", "metric": "SciFact.ndcg_at_10"}
    assert promotion(0.5, on, None, **rule) == (True, "no champion yet")
    assert promotion(0.5, on, Champion(3, None, on), **rule) == (
        True, "champion version 3 has no SciFact.ndcg_at_10 score"
    )  # fmt: skip
    assert promotion(0.61, on, Champion(3, 0.6, on), **rule) == (True, "0.61 > 0.6")
    assert promotion(0.6, on, Champion(3, 0.6, on), **rule) == (False, "0.6 <= 0.6")
    assert promotion(0.4, on, Champion(3, 0.6, on), **rule) == (False, "0.4 <= 0.6")
    subset = '{"data": {"n_documents": 250, "n_queries": 100}, "precision": "fp32"}'
    verdict = promotion(0.9, subset, Champion(3, 0.6, on), **rule)
    assert not verdict.promoted and verdict.reason.startswith(f"not comparable: champion version 3 was scored on {on}")


def test_an_evaluation_is_comparable_only_on_the_same_tasks_sizes_seed_and_precision() -> None:
    from synthembed.tracking.registry import scored_on_of

    def evaluation(tasks: dict, seed: int = 42, precision: str = "fp32") -> dict:
        on = {"tasks": tasks, "seed": seed, "precision": precision}
        return {"average": {"overall": 0.5}, "scored_on": on}

    base = scored_on_of(evaluation({"SciFact": "full", "STS15": "full"}), "average.overall")
    assert base == scored_on_of(evaluation({"STS15": "full", "SciFact": "full"}), "average.overall")
    for other in (
        evaluation({"SciFact": "full"}),
        evaluation({"SciFact": {"n_queries": 100}, "STS15": "full"}),
        evaluation({"SciFact": "full", "STS15": "full"}, seed=7),
        evaluation({"SciFact": "full", "STS15": "full"}, precision="bf16"),
    ):
        assert scored_on_of(other, "average.overall") != base
