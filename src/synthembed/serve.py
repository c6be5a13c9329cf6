"""An OpenAI-compatible embeddings server: the ``openai`` client and LiteLLM work against it unchanged.

``POST /v1/embeddings`` takes ``input`` (a string or a list of strings) and an optional ``instruction`` that
marks the inputs as queries, written by the model's own query convention (the instruction in the model's
template, or plain text for a model that takes no instructions); ``encoding_format`` may be ``float`` or
``base64`` (the ``openai`` client asks for base64 by default). Concurrent requests are merged by a
micro-batcher: while the model encodes one batch, new requests queue up, and the next encode call takes all of
them at once, which is what lets a small server keep up with many clients.

A request is checked cheapest first, so that a bad or hostile one costs little: the API key, then the content
type and the body's size (before anything is parsed), then the JSON, the fields and the texts (the rule that the
CLI applies too), and last the token counts, which run on a thread of their own so that ``/health`` and other
requests never wait behind a huge text. Every error, even a 404 or a 500, uses OpenAI's
``{"error": {"message", "type", "param", "code"}}`` shape, so clients show its message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException  # FastAPI's HTTPException and the router's 404 and 405 are these

from synthembed.encoder.embedder import Embedder
from synthembed.encoder.inputs import check_texts
from synthembed.errors import UserError

EncodeFn = Callable[[list[str], str | None], np.ndarray]


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; larger requests are refused (413) rather than truncated silently."""

    max_inputs: int = 256  # texts per request
    max_input_tokens: int | None = None  # per text, instruction included; None: the model's max_seq_length
    max_batch_texts: int = 256  # texts merged into one encode call
    max_request_bytes: int | None = None  # body size; None: 16 bytes per allowed token + 64 KiB, at most 16 MiB

    def request_bytes(self, max_tokens: int) -> int:
        """The body size limit, checked before the body is read, parsed or tokenized.

        A valid body holds no more text than the token limits allow; 16 bytes a token leave room for JSON escapes.
        """
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return min(self.max_inputs * max_tokens * 16 + 2**16, 2**24)  # 64 KiB for the other fields; 16 MiB


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="one text or a list of texts (token arrays are not accepted)")
    model: str | None = None
    instruction: str | None = Field(
        None, description="task instruction: embeds the inputs as queries (plain text for a model without instructions)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


_JSON_MEDIA_TYPE = re.compile(r"application/([\w.-]+\+)?json")  # application/json, application/vnd.x+json
# The route reads its body itself (to check size and type first), so the schema is declared for /docs by hand.
_BODY_SCHEMA = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}}}
}


class MicroBatcher:
    """Merge concurrent requests into few encode calls, run one at a time on a worker thread.

    ``merge=False`` encodes every request on its own (the per-request baseline of the benchmark).
    """

    def __init__(self, encode: EncodeFn, max_batch_texts: int = 256, merge: bool = True) -> None:
        self.encode = encode
        self.max_batch_texts = max_batch_texts
        self.merge = merge
        self.encode_calls = 0
        self._queue: asyncio.Queue[tuple[list[str], str | None, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], instruction: str | None) -> np.ndarray:
        assert self._queue is not None, "MicroBatcher.start() was not awaited"
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, instruction, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            while self.merge and size < self.max_batch_texts and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0])
            groups: dict[str | None, list[tuple[list[str], str | None, asyncio.Future]]] = {}
            for item in batch:
                groups.setdefault(item[1], []).append(item)
            for instruction, items in groups.items():
                texts = [text for item in items for text in item[0]]
                try:
                    self.encode_calls += 1
                    vectors = await loop.run_in_executor(self._executor, self.encode, texts, instruction)
                except Exception as exc:  # every waiting request learns of the failure
                    for _, _, future in items:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for item_texts, _, future in items:
                    if not future.done():  # a client that went away leaves a cancelled future
                        future.set_result(vectors[start : start + len(item_texts)])
                    start += len(item_texts)


class TokenCounter:
    """Count the tokens of texts on one thread of its own, so a huge text never stalls the event loop.

    A Rust tokenizer used from two threads at once can fail with "Already borrowed": the counter has its own
    copy of the tokenizer (the encode worker uses the embedder's), and a single thread, so it never runs
    concurrently with itself.
    """

    def __init__(self, tokenizer: Callable[[list[str]], Mapping[str, Any]]) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="count")

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts)["input_ids"]]

    async def count(self, texts: list[str]) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.lengths, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def create_app(
    embedder: Embedder,
    model_name: str,
    *,
    api_key: str | None = None,
    limits: RequestLimits | None = None,
    batching: bool = True,
) -> FastAPI:
    """The app serving ``embedder``; with ``api_key`` every /v1 request needs ``Authorization: Bearer``."""
    limits = limits or RequestLimits()
    max_tokens = limits.max_input_tokens or int(embedder.model.max_seq_length)
    max_bytes = limits.request_bytes(max_tokens)
    counter = TokenCounter(embedder.tokenizer)
    batcher = MicroBatcher(
        lambda texts, instruction: embedder.encode(texts, instruction=instruction, show_progress=False),
        limits.max_batch_texts,
        merge=batching,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()
        counter.close()

    app = FastAPI(title="synthembed embeddings", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.counter = counter

    def authorize(request: Request) -> None:
        """A dependency, so it runs before the route reads the body: a stranger learns nothing but 401."""
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        """Anything unexpected: the traceback goes to the server log (Starlette re-raises), not to the client."""
        return _error(500, "internal server error; the server log has the details")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "dimension": embedder.dimension}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "synthembed"}]}

    @app.post("/v1/embeddings", dependencies=[Depends(authorize)], openapi_extra=_BODY_SCHEMA)
    async def embeddings(request: Request) -> dict:
        body = _parse(await _read_body(request, max_bytes))
        texts = [body.input] if isinstance(body.input, str) else body.input
        _check(texts, body, embedder.dimension, limits.max_inputs)
        written = texts if body.instruction is None else [embedder.query_text(t, body.instruction) for t in texts]
        lengths = await counter.count(written)
        too_long = next((i for i, n in enumerate(lengths) if n > max_tokens), None)
        if too_long is not None:
            raise HTTPException(
                413,
                f"input[{too_long}] has {lengths[too_long]} tokens; this server accepts at most {max_tokens}",
            )
        vectors = await batcher.submit(texts, body.instruction)
        tokens = sum(lengths)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
                for i, v in enumerate(vectors)
            ],
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, or 415 or 413 before anything is parsed, so a huge body costs neither time nor memory.

    The declared type and length are checked first; the bytes actually received are counted too, which stops
    a chunked body (one that declares no length) as soon as it passes the limit.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not _JSON_MEDIA_TYPE.fullmatch(media_type):
        raise HTTPException(415, "the body must be JSON: send it with 'Content-Type: application/json'")
    declared = request.headers.get("content-length", "")
    too_large = HTTPException(413, f"the body is larger than this server accepts ({max_bytes} bytes)")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> EmbeddingRequest:
    """The request from JSON text: malformed JSON is 400, JSON of the wrong shape 422 (as OpenAI answers).

    The standard ``json`` module keeps a lone surrogate escape such as ``"\\ud83d"`` (legal JSON) as it is,
    so that the text rule can name the text instead of the parser failing on the whole body.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bytes that are not UTF-8, or deep nesting
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    try:
        return EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise HTTPException(422, f"{where}: {error['msg']}") from None


def _check(texts: Sequence[str], body: EmbeddingRequest, dimension: int, max_inputs: int) -> None:
    """Refuse what no encode call should see; the texts follow the rule the CLI applies (UserError, 422)."""
    if not texts:
        raise HTTPException(422, "input: must hold at least one text")
    if len(texts) > max_inputs:
        raise HTTPException(413, f"input: {len(texts)} texts in one request; this server accepts at most {max_inputs}")
    check_texts(texts, name="input")
    if body.dimensions is not None and body.dimensions != dimension:
        raise HTTPException(422, f"dimensions: this model gives {dimension}-dimensional embeddings only")


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape, for every status, so that the ``openai`` client and LiteLLM show ``message``."""
    kind = "authentication_error" if status == 401 else "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": None, "code": status}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """Claim the listening socket up front, so a busy port is one clear error before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# Clients pool their connections; a server that closes an idle one after uvicorn's default 5 s races a client that
# is just reusing it (the client reads from a closed socket), which a busy machine makes likely.
KEEP_ALIVE_S = 75


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Run ``app`` on ``sock`` until Ctrl-C, which is the normal way to stop it (exit code 0)."""
    import uvicorn

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal after its graceful shutdown
        uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_keep_alive=KEEP_ALIVE_S)).run(sockets=[sock])


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port in a background thread and yield its base URL (tests, benchmarks)."""
    import uvicorn

    sock = bind(host, 0)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=KEEP_ALIVE_S)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the embeddings server failed to start")
            threading.Event().wait(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
