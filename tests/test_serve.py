"""The embeddings server over real HTTP on 127.0.0.1: the openai client, LiteLLM, limits, auth, load."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from synthembed.encoder import Embedder
from synthembed.params import ModelParams
from synthembed.serve import Limits, create_app, running_server

KEY = "test-key-123"
TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "Bananas are yellow."]
INSTRUCTION = "Given a question, retrieve passages that answer it"


@pytest.fixture(scope="module")
def embedder(tiny_decoder_dir: Path) -> Embedder:
    return Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32"))  # answers are compared exactly


@pytest.fixture(scope="module")
def server(embedder: Embedder):
    """One authenticated server for the module, with small limits so 413 is cheap to reach."""
    app = create_app(embedder, "tiny", api_key=KEY, limits=Limits(max_inputs=8, max_input_tokens=64))
    with running_server(app) as url:
        yield url, app


def _post(url: str, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/embeddings", json=body, headers=headers, timeout=30)


def test_openai_client_gets_the_embedders_vectors(server, embedder: Embedder) -> None:
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    response = client.embeddings.create(model="tiny", input=TEXTS)  # the client asks for base64 by default
    got = np.array([item.embedding for item in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, embedder.encode(TEXTS), atol=1e-5)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.model == "tiny"
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(TEXTS)

    single = client.embeddings.create(model="tiny", input=TEXTS[1], encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, embedder.encode(TEXTS[1:2])[0], atol=1e-5)

    queries = client.embeddings.create(model="tiny", input=TEXTS[:2], extra_body={"instruction": INSTRUCTION})
    expected = embedder.encode(TEXTS[:2], instruction=INSTRUCTION)
    np.testing.assert_allclose([d.embedding for d in queries.data], expected, atol=1e-5)
    assert not np.allclose(expected, embedder.encode(TEXTS[:2]), atol=1e-3)  # the instruction changed them


def test_base64_is_little_endian_float32(server, embedder: Embedder) -> None:
    url, _ = server
    data = _post(url, {"model": "tiny", "input": TEXTS[0], "encoding_format": "base64"}).json()["data"]
    vector = np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, embedder.encode(TEXTS[:1])[0], atol=1e-5)


def test_litellm_embedding_works_against_the_server(server, embedder: Embedder) -> None:
    import litellm

    url, _ = server
    response = litellm.embedding(model="openai/tiny", input=TEXTS, api_base=f"{url}/v1", api_key=KEY)
    got = np.array([item["embedding"] for item in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, embedder.encode(TEXTS), atol=1e-5)


def test_health_needs_no_key_and_reports_the_model(server, embedder: Embedder) -> None:
    url, _ = server
    health = httpx.get(f"{url}/health").json()
    assert health == {"status": "ok", "model": "tiny", "dimension": embedder.dimension}


@pytest.mark.parametrize(
    ("key", "body", "status", "message"),
    [
        (None, {"input": "hi"}, 401, "API key"),
        ("wrong", {"input": "hi"}, 401, "API key"),
        (KEY, {"input": ["x"] * 9}, 413, "at most 8"),
        (KEY, {"input": "word " * 200}, 413, "at most 64"),
        (KEY, {"input": []}, 422, "at least one text"),
        (KEY, {"input": ["ok", "  "]}, 422, "input[1]: empty text"),
        (KEY, {"input": [1, 2, 3]}, 422, "input"),
        (KEY, {"texts": "missing input"}, 422, "input"),
        (KEY, {"input": "hi", "encoding_format": "int8"}, 422, "encoding_format"),
        (KEY, {"input": "hi", "dimensions": 3}, 422, "dimensions"),
    ],
)
def test_bad_requests_get_a_status_and_a_message(server, key, body, status, message) -> None:
    url, _ = server
    response = _post(url, {"model": "tiny", **body}, key=key)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_openai_client_sees_the_error_message(server) -> None:
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        client.embeddings.create(model="tiny", input="hi")


def test_concurrent_load_is_answered_correctly_and_batched(server, embedder: Embedder) -> None:
    url, app = server
    texts = [f"request number {i} about topic {i % 7}" for i in range(300)]
    expected = embedder.encode(texts, batch_size=64)
    calls_before = app.state.batcher.encode_calls
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:

        def one(i: int) -> np.ndarray:
            response = client.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": texts[i]})
            response.raise_for_status()
            return np.array(response.json()["data"][0]["embedding"], dtype=np.float32)

        with ThreadPoolExecutor(max_workers=32) as pool:
            got = np.stack(list(pool.map(one, range(len(texts)))))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    calls = app.state.batcher.encode_calls - calls_before
    assert calls < len(texts)  # concurrent requests were merged into shared encode calls


@pytest.mark.slow
def test_serve_command_takes_the_key_from_the_environment(tmp_path: Path, tiny_decoder_dir: Path) -> None:
    """The real ``synthembed serve`` process: key from SYNTHEMBED_API_KEY, answers, and stops on Ctrl-C."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\n")
    args = ["serve", "--model", str(tiny_decoder_dir), "--port", str(port), "--params", str(params)]
    env = {**os.environ, "SYNTHEMBED_API_KEY": "from-env"}
    code = "from synthembed.cli import run; run()"
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert _post(url, {"input": "hi"}, key=None).status_code == 401
        response = _post(url, {"input": ["hi", "there"]}, key="from-env")
        assert response.status_code == 200 and len(response.json()["data"]) == 2
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "from-env" not in err and "bearer token needed" in err
