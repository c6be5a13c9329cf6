"""A real OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks.

Answers every kind's JSON (keys taken from the request's JSON schema, or from the prompt), and misbehaves on
purpose where a test asks for it: prose or fenced JSON, invalid JSON, a 429 before success, a reply slower
than the client's timeout. It records every request so tests can count retries and repeated prompts.

It also speaks OpenAI's files and batches API: an uploaded batch-input file becomes a batch that moves from
validating to in_progress to completed on successive retrieves (a batch beyond the first ``hold_batches``
stays in_progress). On completion each line is answered as a chat request would be: 200s go to the output
file, the rest (and ``line_error`` prompts, an error object without a response) to the error file.
"""

from __future__ import annotations

import email
import hashlib
import itertools
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# mode(prompt) -> json, prose, fence, invalid, duplicate, rate_limit_once, server_error_once, slow_once, slow,
# or a failure on every attempt: status_500, status_502, status_400, garbage_body (not JSON), no_choices;
# in a batch also line_error: an error-file line with an error object and no response
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
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # by id, in creation order
        self.batches_created = 0  # POST /v1/batches received
        self.hold_batches: int | None = None  # set: only this many batches complete, later ones stay in_progress
        self._ids = itertools.count(1)
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
                data = self.rfile.read(int(self.headers["Content-Length"]))
                path = urlsplit(self.path).path
                if path.endswith("/files"):
                    self.reply(*server.upload(self.headers["Content-Type"], data))
                elif path.endswith("/batches"):
                    self.reply(*server.create_batch(json.loads(data), dict(self.headers)))
                else:
                    self.reply(*server.respond(json.loads(data), dict(self.headers)))

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")  # v1, batches[, ID] or v1, files, ID, content
                if parts[1:] == ["batches"]:
                    query = {name: values[0] for name, values in parse_qs(url.query).items()}
                    self.reply(*server.list_batches(int(query.get("limit", 20)), query.get("after")))
                elif parts[1] == "batches":
                    self.reply(*server.retrieve_batch(parts[2]))
                elif parts[1] == "files" and parts[3:] == ["content"] and parts[2] in server.files:
                    self.reply(200, server.files[parts[2]])
                else:
                    self.reply(404, {"error": {"message": f"no such path {url.path}", "type": "not_found"}})

            def reply(self, status: int, payload: dict[str, Any] | bytes) -> None:
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

    def _new_id(self, prefix: str) -> str:
        with self.lock:
            return f"{prefix}-{next(self._ids):04d}"

    def upload(self, content_type: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """POST /v1/files: a multipart form with ``purpose`` and ``file``."""
        form = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + data)
        fields = {part.get_param("name", header="content-disposition"): part for part in form.get_payload()}
        content = fields["file"].get_payload(decode=True)
        purpose = fields["purpose"].get_payload(decode=True).decode()
        return 200, self._store_file(content, fields["file"].get_filename() or "upload", purpose)

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self._new_id("file")
        self.files[file_id] = content
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def create_batch(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST /v1/batches: a batch over an uploaded file, validating until its first retrieve."""
        if body.get("input_file_id") not in self.files:
            return 404, {"error": {"message": "no such file", "type": "invalid_request_error"}}
        batch = {
            "id": self._new_id("batch"),
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "_headers": headers,  # the lines are answered with the creator's headers
        }
        with self.lock:
            self.batches_created += 1
            self.batches[batch["id"]] = batch
        return 200, _public(batch)

    def retrieve_batch(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        """GET /v1/batches/{id}: each retrieve moves the batch one status on (validating, in_progress,
        completed), except that a batch beyond the first ``hold_batches`` stays in_progress."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, {"error": {"message": f"no batch {batch_id}", "type": "invalid_request_error"}}
        with self.lock:
            status = batch["status"]
            if status == "validating":
                batch["status"] = "in_progress"
            held = self.hold_batches is not None and list(self.batches).index(batch_id) >= self.hold_batches
            advance = status == "in_progress" and not held
            if advance:
                batch["status"] = "finalizing"  # a concurrent retrieve does not answer the lines again
        if advance:
            self._complete(batch)
        return 200, _public(batch)

    def list_batches(self, limit: int, after: str | None) -> tuple[int, dict[str, Any]]:
        """GET /v1/batches: newest first, ``limit`` a page, the next page ``after`` the last id."""
        newest_first = [_public(batch) for batch in reversed(list(self.batches.values()))]
        start = next((i + 1 for i, batch in enumerate(newest_first) if batch["id"] == after), 0)
        page = newest_first[start : start + limit]
        return 200, {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(newest_first),
        }

    def _complete(self, batch: dict[str, Any]) -> None:
        """Answer every line of the batch's input file as a chat request; write its output and error files."""
        output, errors = [], []
        for line in self.files[batch["input_file_id"]].decode().splitlines():
            item = json.loads(line)
            row: dict[str, Any] = {"id": self._new_id("batch_req"), "custom_id": item["custom_id"]}
            if self.mode(item["body"]["messages"][-1]["content"]) == "line_error":
                message = {"code": "invalid_request", "message": "this line is not a valid request"}
                errors.append({**row, "response": None, "error": message})
                continue
            status, payload = self.respond(item["body"], batch["_headers"])
            body = payload if isinstance(payload, dict) else payload.decode(errors="replace")
            row |= {"response": {"status_code": status, "request_id": row["id"], "body": body}, "error": None}
            (output if status == 200 else errors).append(row)
        for rows, field, name in ((output, "output_file_id", "output"), (errors, "error_file_id", "errors")):
            if rows:
                content = "".join(json.dumps(row) + "\n" for row in rows).encode()
                batch[field] = self._store_file(content, f"{batch['id']}_{name}.jsonl", "batch_output")["id"]
        batch["request_counts"] = {"total": len(output) + len(errors), "completed": len(output), "failed": len(errors)}
        batch["status"] = "completed"
        batch["completed_at"] = int(time.time())


FAILURES: dict[str, tuple[int, dict[str, Any] | bytes]] = {
    "status_500": (500, {"error": {"message": "internal error", "type": "server_error"}}),
    "status_502": (502, {"error": {"message": "bad gateway", "type": "server_error"}}),
    "status_400": (400, {"error": {"message": "this request is malformed", "type": "invalid_request_error"}}),
    "garbage_body": (200, b"<html>upstream proxy says hello</html>"),
    "no_choices": (200, {"id": "x", "object": "chat.completion", "model": "m", "usage": {}}),
}


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch as the API shows it (without what the server keeps for itself)."""
    return {key: value for key, value in batch.items() if not key.startswith("_")}


# Five tasks a brainstorm answer lists: distinct topics, so brainstorm's near-duplicate filter keeps them all.
TASK_TOPICS = ("bread recipes", "court rulings on patents", "bird song recordings", "tax forms", "chess openings")


def _answer(body: dict[str, Any], prompt: str, identity: str) -> dict[str, Any]:
    """A schema-shaped answer, distinct for each distinct ``identity``."""
    tag = hashlib.sha256(identity.encode()).hexdigest()[:10]
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    keys = list(schema.get("properties", {})) or re.findall(r'"(\w+)": "\.\.\."', prompt)
    if keys == ["tasks"] or '{"tasks"' in prompt:
        return {"tasks": [f"Retrieve {topic} for a query ({tag})." for topic in TASK_TOPICS]}
    return {key: f"{key} text {tag}" for key in keys}


if __name__ == "__main__":  # a server in its own process (benchmarks): prints its api_base, serves until killed
    with FakeLLMServer(latency_s=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0) as served:
        print(served.api_base, flush=True)
        threading.Event().wait()
