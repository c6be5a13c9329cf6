"""The embeddings server over real HTTP on 127.0.0.1: the openai client, LiteLLM, limits, auth, load."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from synthembed.encoder import Embedder
from synthembed.params import ModelParams
from synthembed.serve import RequestLimits, create_app, running_server

KEY = "test-key-123"
TEXTS = ["The cat sat on the mat.", "Paris is the capital of France.", "Bananas are yellow."]
INSTRUCTION = "Given a question, retrieve passages that answer it"


@pytest.fixture(scope="module")
def embedder(tiny_decoder_dir: Path) -> Embedder:
    return Embedder.load(str(tiny_decoder_dir), ModelParams(dtype="fp32"))  # answers are compared exactly


@pytest.fixture(scope="module")
def server(embedder: Embedder):
    """One authenticated server for the module, with small limits so 413 is cheap to reach."""
    app = create_app(embedder, "tiny", api_key=KEY, limits=RequestLimits(max_inputs=8, max_input_tokens=64))
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
    np.testing.assert_allclose(got, embedder.encode_documents(TEXTS), atol=1e-5)
    assert [item.index for item in response.data] == [0, 1, 2]
    assert response.model == "tiny"
    assert response.usage.prompt_tokens == response.usage.total_tokens > len(TEXTS)

    single = client.embeddings.create(model="tiny", input=TEXTS[1], encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, embedder.encode_documents(TEXTS[1:2])[0], atol=1e-5)

    queries = client.embeddings.create(model="tiny", input=TEXTS[:2], extra_body={"instruction": INSTRUCTION})
    expected = embedder.encode_queries(TEXTS[:2], instruction=INSTRUCTION)
    np.testing.assert_allclose([d.embedding for d in queries.data], expected, atol=1e-5)
    assert not np.allclose(expected, embedder.encode_documents(TEXTS[:2]), atol=1e-3)  # the instruction changed them
    written = [embedder.query_text(text, INSTRUCTION) for text in TEXTS[:2]]
    assert queries.usage.prompt_tokens == sum(len(ids) for ids in embedder.tokenizer(written)["input_ids"])


def test_a_model_without_instructions_embeds_instructed_inputs_as_plain_text(minilm_dir: Path) -> None:
    """all-MiniLM-L6-v2 was trained without instructions: ``instruction`` only marks the inputs as queries."""
    minilm = Embedder.load(str(minilm_dir), ModelParams(dtype="fp32"))
    with running_server(create_app(minilm, "minilm")) as url:
        queries = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS, "instruction": INSTRUCTION}, timeout=30)
        documents = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS}, timeout=30)
    assert queries.status_code == documents.status_code == 200, queries.text
    got = [item["embedding"] for item in queries.json()["data"]]
    np.testing.assert_allclose(got, minilm.encode_documents(TEXTS), atol=1e-5)
    assert queries.json()["usage"] == documents.json()["usage"]  # no instruction tokens were counted


def test_base64_is_little_endian_float32(server, embedder: Embedder) -> None:
    url, _ = server
    data = _post(url, {"model": "tiny", "input": TEXTS[0], "encoding_format": "base64"}).json()["data"]
    vector = np.frombuffer(base64.b64decode(data[0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, embedder.encode_documents(TEXTS[:1])[0], atol=1e-5)


def test_litellm_embedding_works_against_the_server(server, embedder: Embedder) -> None:
    import litellm

    url, _ = server
    response = litellm.embedding(model="openai/tiny", input=TEXTS, api_base=f"{url}/v1", api_key=KEY)
    got = np.array([item["embedding"] for item in response.data], dtype=np.float32)
    np.testing.assert_allclose(got, embedder.encode_documents(TEXTS), atol=1e-5)


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
        (KEY, {"input": ["ok", "  "]}, 422, "input[1] is empty"),  # the CLI's rule (encoder.inputs)
        (KEY, {"input": "\n\t "}, 422, "input[0] is empty"),
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


def _assert_openai_error(response: httpx.Response, status: int, message: str = "") -> None:
    """The OpenAI error shape, whatever the status, so clients can show the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert message in error["message"]


def _raw_request(url: str, head: str, body: bytes = b"") -> httpx.Response:
    """Send a hand-written request on a plain socket and read one response (what httpx would not send)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head_bytes, _, content = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
        while len(content) < int(headers["content-length"]):
            content += sock.recv(65536)
    return httpx.Response(int(lines[0].split()[1]), headers=headers, content=content)


def test_a_20_mb_body_is_refused_by_its_size_at_once(server) -> None:
    """Cause 13: the byte limit comes before parsing and token counting, which took 30 s and 580 MB."""
    url, _ = server
    body = b'{"input": "' + b"word " * 4_000_000 + b'"}'
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    start = time.monotonic()
    response = httpx.post(f"{url}/v1/embeddings", content=body, headers=headers, timeout=30)
    assert time.monotonic() - start < 2
    _assert_openai_error(response, 413, "larger than this server accepts")


def test_the_declared_length_is_refused_before_the_body_arrives(server) -> None:
    """Cause 13: a Content-Length over the limit gets 413 with no body sent at all; /health answers meanwhile."""
    url, _ = server
    head = f"POST /v1/embeddings HTTP/1.1\nHost: x\nAuthorization: Bearer {KEY}\nContent-Type: application/json\n"
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_raw_request, url, head + "Content-Length: 20000000\n")
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        _assert_openai_error(pending.result(timeout=10), 413, "bytes")


def test_a_chunked_body_is_cut_off_at_the_limit(server) -> None:
    """Cause 13: a body without Content-Length is counted as it arrives (the test server's limit is 72 KiB)."""
    url, _ = server
    chunks = iter([b'{"input": "', b"a" * 65536, b"a" * 65536, b'"}'])
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{url}/v1/embeddings", content=chunks, headers=headers, timeout=30)
    assert response.request.headers["transfer-encoding"] == "chunked"
    _assert_openai_error(response, 413, "larger than this server accepts")


@pytest.mark.parametrize("stage", ["count", "encode"])
def test_health_answers_while_a_request_is_counted_or_encoded(server, monkeypatch, stage: str) -> None:
    """Cause 13: token counting and encoding run on threads of their own, never on the event loop."""
    url, app = server
    owner, name = (app.state.counter, "lengths") if stage == "count" else (app.state.batcher, "encode")
    original, inside, release = getattr(owner, name), threading.Event(), threading.Event()

    def held(*args: object) -> object:
        inside.set()
        release.wait(10)
        return original(*args)

    monkeypatch.setattr(owner, name, held)
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pending = pool.submit(_post, url, {"input": TEXTS})
            assert inside.wait(10)
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        finally:
            release.set()
        assert pending.result().status_code == 200


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/v1/embeddings", 405), ("GET", "/nope", 404)])
def test_router_errors_use_the_openai_shape(server, method: str, path: str, status: int) -> None:
    """Cause 14: the handler is Starlette's HTTPException, which the router raises, not only FastAPI's."""
    url, _ = server
    response = httpx.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {KEY}"})
    _assert_openai_error(response, status)


@pytest.mark.parametrize(
    ("key", "content_type", "body", "status", "message"),
    [
        (KEY, "application/json", b'{"input": "hi"', 400, "not valid JSON"),
        (KEY, "application/json", b"\xff\xfe{}", 400, "not valid JSON"),
        (KEY, "application/json", b"[" * 50_000, 400, "not valid JSON"),
        (KEY, "application/json", b'["hi"]', 422, "body"),
        (KEY, None, b'{"input": "hi"}', 415, "Content-Type: application/json"),
        (KEY, "text/plain", b'{"input": "hi"}', 415, "Content-Type: application/json"),
        (KEY, "application/json; charset=utf-8", b'{"input": "hi"}', 200, ""),
        (None, "application/json", b'{"input": ', 401, "API key"),
        (None, None, b"not json", 401, "API key"),
    ],
)
def test_the_body_is_checked_after_the_key_and_before_parsing(server, key, content_type, body, status, message) -> None:
    """Cause 14: auth first, then the content type (415), then JSON (400) and its fields (422)."""
    url, _ = server
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if content_type:
        headers["Content-Type"] = content_type
    response = httpx.post(f"{url}/v1/embeddings", content=body, headers=headers, timeout=30)
    if status == 200:
        assert response.status_code == 200 and len(response.json()["data"]) == 1
    else:
        _assert_openai_error(response, status, message)


def test_an_unauthenticated_oversized_body_gets_401(server) -> None:
    """Cause 14: a stranger is told only that the key is wrong, whatever the body."""
    url, _ = server
    head = "POST /v1/embeddings HTTP/1.1\nHost: x\nContent-Length: 20000000\n"
    _assert_openai_error(_raw_request(url, head), 401, "API key")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"input": "great day \\ud83d"}', "input[0] is not valid Unicode"),
        (b'{"input": ["fine", "cut \\ud83d through"]}', "input[1] is not valid Unicode"),
    ],
)
def test_a_lone_surrogate_gets_422_with_the_clis_message(server, raw: bytes, message: str) -> None:
    """Causes 9 and 15: legal JSON from JavaScript that cut an emoji; it crashed the tokenizer with a plain 500."""
    url, _ = server
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    response = httpx.post(f"{url}/v1/embeddings", content=raw, headers=headers, timeout=30)
    _assert_openai_error(response, 422, message)


def test_an_unexpected_failure_is_a_500_in_the_openai_shape(server, monkeypatch) -> None:
    """Cause 15: an exception nobody expected answers in the error shape, without its internals."""
    url, app = server

    def broken(texts: list[str], instruction: str | None) -> np.ndarray:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(app.state.batcher, "encode", broken)
    response = _post(url, {"input": "hi"})
    _assert_openai_error(response, 500, "internal server error")
    assert "secret" not in response.text


def test_openai_client_sees_the_error_message(server) -> None:
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        client.embeddings.create(model="tiny", input="hi")


def test_concurrent_load_is_answered_correctly_and_batched(server, embedder: Embedder) -> None:
    url, app = server
    texts = [f"request number {i} about topic {i % 7}" for i in range(300)]
    expected = embedder.encode_documents(texts, batch_size=64)
    calls_before = app.state.batcher.encode_calls
    # One keep-alive client per thread, as 32 separate callers would have: httpx's sync connection pool is not
    # safe to share across threads (a socket closed by one thread was once read by another: EBADF).
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> np.ndarray:
        if not hasattr(local, "client"):
            local.client = httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
            clients.append(local.client)
        response = local.client.post(f"{url}/v1/embeddings", json={"model": "tiny", "input": texts[i]})
        response.raise_for_status()
        return np.array(response.json()["data"][0]["embedding"], dtype=np.float32)

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            got = np.stack(list(pool.map(one, range(len(texts)))))
    finally:
        for client in clients:
            client.close()
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
