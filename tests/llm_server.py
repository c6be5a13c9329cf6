"""A real OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks.

Answers every kind's JSON (keys taken from the request's JSON schema, or from the prompt), and misbehaves on
purpose where a test asks for it: prose or fenced JSON, invalid JSON, a 429 before success, a reply slower
than the client's timeout. It records every request so tests can count retries and repeated prompts.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# mode(prompt) -> json, prose, fence, invalid, duplicate, rate_limit_once, server_error_once, slow_once, slow,
# or a failure on every attempt: status_500, status_502, status_400, garbage_body (not JSON), no_choices
Mode = Callable[[str], str]


def by_hash(weights: dict[str, int]) -> Mode:
    """A deterministic mode per prompt, spread by a hash of its text."""
    table = [mode for mode, weight in weights.items() for _ in range(weight)]

    def mode(prompt: str) -> str:
        return table[int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % len(table)]

    return mode


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up (as one does after a 401) is no error worth a traceback in the tested output."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeLLMServer:
    def __init__(
        self,
        mode: Mode = lambda prompt: "json",
        latency_s: float = 0.0,
        slow_s: float = 2.0,
        api_key: str | None = None,
    ):
        self.mode = mode
        self.api_key = api_key  # set: requests without ``Authorization: Bearer <api_key>`` get a 401
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()  # [prompt, seed] -> requests received
        self.answered: Counter[str] = Counter()  # [prompt, seed] -> 200 answers sent
        self.statuses: Counter[int] = Counter()
        self.headers_seen: list[dict[str, str]] = []
        self.hold_after: int | None = None  # stop answering (block) once this many 200s were sent
        self.released = threading.Event()
        self._httpd = QuietServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def total_requests(self) -> int:
        return sum(self.received.values())

    def __enter__(self) -> FakeLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload = server.respond(body, dict(self.headers))
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def respond(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any] | bytes]:
        prompt = body["messages"][-1]["content"]
        request = json.dumps([prompt, body.get("seed")])  # the same prompt with another seed is another request
        with self.lock:
            self.received[request] += 1
            attempt = self.received[request]
            self.headers_seen.append(headers)
        if self.api_key and headers.get("Authorization") != f"Bearer {self.api_key}":
            # Like some gateways, the message repeats what it was sent: the client must mask it.
            sent = headers.get("Authorization", "nothing")
            refused = {"message": f"Incorrect API key provided: {sent}", "type": "invalid_request_error"}
            return self._status(401, {"error": refused})
        mode = self.mode(prompt)
        if self.latency_s:
            time.sleep(self.latency_s)
        if mode == "rate_limit_once" and attempt == 1:
            return self._status(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}})
        if mode == "server_error_once" and attempt == 1:
            return self._status(503, {"error": {"message": "overloaded", "type": "server_error"}})
        if mode in FAILURES:
            return self._status(*FAILURES[mode])
        if mode == "slow" or (mode == "slow_once" and attempt == 1):
            time.sleep(self.slow_s)
        if self.hold_after is not None:
            with self.lock:
                hold = sum(self.answered.values()) >= self.hold_after
            if hold:  # held requests are never answered: they fail once released
                self.released.wait()
                return self._status(503, {"error": {"message": "shutting down", "type": "server_error"}})
        answer = json.dumps(_answer(body, prompt, "same" if mode == "duplicate" else request), ensure_ascii=False)
        content = {
            "prose": f"Sure! Here is the example you asked for:\n{answer}\nI hope it helps.",
            "fence": f"```json\n{answer}\n```",
            "invalid": answer[: len(answer) // 2],
        }.get(mode, answer)
        with self.lock:
            self.answered[request] += 1
        return self._status(
            200,
            {
                "id": "chatcmpl-" + hashlib.sha1(prompt.encode()).hexdigest()[:12],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": len(content.split()),
                    "total_tokens": len(prompt.split()) + len(content.split()),
                },
            },
        )

    def _status(self, status: int, payload: dict[str, Any] | bytes) -> tuple[int, dict[str, Any] | bytes]:
        with self.lock:
            self.statuses[status] += 1
        return status, payload


FAILURES: dict[str, tuple[int, dict[str, Any] | bytes]] = {
    "status_500": (500, {"error": {"message": "internal error", "type": "server_error"}}),
    "status_502": (502, {"error": {"message": "bad gateway", "type": "server_error"}}),
    "status_400": (400, {"error": {"message": "this request is malformed", "type": "invalid_request_error"}}),
    "garbage_body": (200, b"<html>upstream proxy says hello</html>"),
    "no_choices": (200, {"id": "x", "object": "chat.completion", "model": "m", "usage": {}}),
}


def _answer(body: dict[str, Any], prompt: str, identity: str) -> dict[str, Any]:
    """A schema-shaped answer, distinct for each distinct ``identity``."""
    tag = hashlib.sha256(identity.encode()).hexdigest()[:10]
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    keys = list(schema.get("properties", {})) or re.findall(r'"(\w+)": "\.\.\."', prompt)
    if keys == ["tasks"] or '{"tasks"' in prompt:
        return {"tasks": [f"Retrieve documents of type {tag}-{i} for a query." for i in range(5)]}
    return {key: f"{key} text {tag}" for key in keys}
