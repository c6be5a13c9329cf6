"""An OpenAI-compatible embeddings server: the ``openai`` client and LiteLLM work against it unchanged.

``POST /v1/embeddings`` takes ``input`` (a string or a list of strings) and an optional ``instruction`` that
marks the inputs as queries (E5 prefix); ``encoding_format`` may be ``float`` or ``base64`` (the ``openai``
client asks for base64 by default). Concurrent requests are merged by a micro-batcher: while the model encodes
one batch, new requests queue up, and the next encode call takes all of them at once, which is what lets a
small server keep up with many clients. Errors use OpenAI's ``{"error": {"message": ...}}`` shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from synthembed.encoder.embedder import Embedder, query_prompt
from synthembed.errors import UserError

API_KEY_ENV = "SYNTHEMBED_API_KEY"
EncodeFn = Callable[[list[str], str | None], np.ndarray]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests are refused (413) rather than truncated silently."""

    max_inputs: int = 256  # texts per request
    max_input_tokens: int | None = None  # per text, instruction included; None: the model's max_seq_length
    max_batch_texts: int = 256  # texts merged into one encode call


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="one text or a list of texts (token arrays are not accepted)")
    model: str | None = None
    instruction: str | None = Field(None, description="task instruction: embeds the inputs as queries")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


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


def create_app(
    embedder: Embedder,
    model_name: str,
    *,
    api_key: str | None = None,
    limits: Limits | None = None,
    batching: bool = True,
) -> FastAPI:
    """The app serving ``embedder``; with ``api_key`` every /v1 request needs ``Authorization: Bearer``."""
    limits = limits or Limits()
    max_tokens = limits.max_input_tokens or int(embedder.model.max_seq_length)
    # Counting runs on the event loop while the worker encodes: a Rust tokenizer used from two threads at once
    # can fail with "Already borrowed", so counting gets its own copy.
    counter = copy.deepcopy(embedder.tokenizer)
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

    app = FastAPI(title="synthembed embeddings", lifespan=lifespan)
    app.state.batcher = batcher

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        return _error(422, f"{where}: {error['msg']}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "dimension": embedder.dimension}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "synthembed"}]}

    @app.post("/v1/embeddings", dependencies=[Depends(authorize)])
    async def embeddings(body: EmbeddingRequest) -> dict:
        texts = [body.input] if isinstance(body.input, str) else body.input
        _check(texts, body, embedder.dimension, limits.max_inputs)
        prompt = query_prompt(body.instruction)
        lengths = [len(ids) for ids in counter([prompt + t for t in texts])["input_ids"]]
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


def _check(texts: Sequence[str], body: EmbeddingRequest, dimension: int, max_inputs: int) -> None:
    if not texts:
        raise HTTPException(422, "input: must hold at least one text")
    if len(texts) > max_inputs:
        raise HTTPException(413, f"input: {len(texts)} texts in one request; this server accepts at most {max_inputs}")
    empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise HTTPException(422, f"input[{empty}]: empty text")
    if body.dimensions is not None and body.dimensions != dimension:
        raise HTTPException(422, f"dimensions: this model gives {dimension}-dimensional embeddings only")


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _error(status: int, message: str) -> JSONResponse:
    kind = {401: "authentication_error", 413: "invalid_request_error", 422: "invalid_request_error"}
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": kind.get(status, "server_error"),
                "param": None,
                "code": status,
            }
        },
        status_code=status,
    )


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """Claim the listening socket up front, so a busy port is one clear error before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Run ``app`` on ``sock`` until Ctrl-C, which is the normal way to stop it (exit code 0)."""
    import uvicorn

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal after its graceful shutdown
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port in a background thread and yield its base URL (tests, benchmarks)."""
    import uvicorn

    sock = bind(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
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
