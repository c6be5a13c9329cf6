"""``llm.mode: batch``: requests sent through the provider's batch API, answered within 24 hours at about half
the online price, and handed back line by line to the client, which journals them like online answers.

Durability protocol: no answer is lost and no batch is paid for twice, whenever the run is killed. Under
``llm.cache_dir/batches/``, per stage:

1. Before anything is sent, a submission's requests are written as OpenAI batch-input JSONL,
   ``<stage>-<key>.jsonl`` (``custom_id``: the request's key), and the state file ``<stage>.state.json``
   names that file and the submission's unique ``key``; both are written atomically.
2. The file is uploaded (purpose ``batch``; its id recorded), the batch is created with ``metadata`` holding
   the key, and the batch's id is recorded in the state right after.
3. A restarted run reads the state. A recorded batch id is polled, never submitted again; a submission without
   one is first looked up among the provider's batches by its metadata key, and submitted only if none has it.
4. A finished batch's output and error files are read; every line goes back to the client, which journals the
   answer before it is parsed; then the submission leaves the state and its input file is deleted.

A submission that holds none of a run's requests stays for the run that asks for them (generate's grounded
requests, say), unless all its requests are journaled already (a run killed between steps 4's journal and
state writes), in which case it is dropped.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from synthembed.errors import UserError
from synthembed.io import atomic_write, write_json
from synthembed.secrets import redact

# Providers whose batch API LiteLLM speaks with OpenAI's batch-input format (files, batches, list, content).
PROVIDERS = ("openai",)
ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000  # OpenAI's limit of requests per batch
MAX_BYTES = 100_000_000  # an input file's size, under OpenAI's 200 MB
METADATA_KEY = "synthembed_submission"
FINISHED = ("completed", "failed", "expired", "cancelled")
POLL_VARIABLE = "SYNTHEMBED_BATCH_POLL_S"
POLL_S = 30.0  # between status checks; a batch takes minutes to hours
LIST_SLACK_S = 600.0  # a looked-up batch is at most this much older than its submission's state (clock skew)


def check_model(model: str) -> None:
    """Batch mode needs a provider with a batch API that LiteLLM speaks; anything else fails before sending."""
    import litellm

    try:
        provider = litellm.get_llm_provider(model)[1]
    except litellm.BadRequestError:
        provider = model.split("/", 1)[0]
    if provider not in PROVIDERS:
        raise UserError(
            f"llm.mode batch: llm.model {model} has no batch API here (supported providers: {', '.join(PROVIDERS)}); "
            "use llm.mode online"
        )


def batch_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """What these tokens cost in a batch: LiteLLM's ``*_cost_per_token_batches`` where its price table has them,
    else half the online price; None for a model it has no price for."""
    import litellm
    from litellm.cost_calculator import batch_cost_calculator
    from litellm.types.utils import Usage

    try:
        litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - unknown models simply have no price
        return None
    usage = Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )
    return sum(batch_cost_calculator(usage, model))


@dataclass(frozen=True)
class LineResult:
    """One request's line of a finished batch: the chat completion of a 200, or the reason there is none."""

    custom_id: str
    body: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Submission:
    """One batch as the state records it: its input file and key before anything is sent, its ids as made."""

    key: str
    input: str  # the input file's name in the batches folder
    written_at: float  # when the state first named it: a lookup by metadata needs no older batch
    file_id: str | None = None
    batch_id: str | None = None


class BatchRun:
    """A stage's batches at one provider: written, submitted or found again, polled, and collected."""

    def __init__(self, folder: Path, stage: str, api: dict[str, Any]):
        self.folder = folder
        self.stage = stage
        self.api = api  # custom_llm_provider, credentials, timeout, retries: for every LiteLLM call
        self.state = folder / f"{stage}.state.json"
        recorded = json.loads(self.state.read_text(encoding="utf-8")) if self.state.exists() else []
        self.submissions = [Submission(**entry) for entry in recorded]
        self.requests = {submission.key: self._custom_ids(submission) for submission in self.submissions}

    def sent(self) -> set[str]:
        """The requests that recorded submissions hold: sent, or about to be, by an earlier run."""
        return set().union(*self.requests.values())

    def run(
        self,
        lines: dict[str, dict[str, Any]],
        wanted: set[str],
        answered: Callable[[str], bool],
        collect: Callable[[LineResult], None],
        show: Callable[[str], None],
    ) -> None:
        """Submit ``lines`` (custom id -> chat-completion body), resume the recorded submissions that hold a
        ``wanted`` request, and ``collect`` every wanted line as its batch finishes; ``show`` gets progress."""
        poll_s = poll_interval()
        active = []
        for submission in list(self.submissions):
            if self.requests[submission.key] & wanted:
                active.append(submission)
            elif all(answered(custom_id) for custom_id in self.requests[submission.key]):
                self._forget(submission)
        fresh = [self._write(chunk) for chunk in _chunks(lines)]
        for submission in active:
            if submission.batch_id is None and (found := self._find(submission)) is not None:
                submission.batch_id = found
                self._save()
        waiting = active + fresh
        for submission in waiting:
            if submission.batch_id is None:
                self._submit(submission)
        submitted = len(waiting)
        while waiting:
            for submission in list(waiting):
                batch = self._call("retrieve_batch", batch_id=submission.batch_id)
                if batch.status in FINISHED:
                    self._collect(submission, batch, wanted, collect)
                    waiting.remove(submission)
            show(f"{submitted} submitted, {len(waiting)} running, {submitted - len(waiting)} done")
            if waiting:
                time.sleep(poll_s)

    def _write(self, chunk: list[tuple[str, str]]) -> Submission:
        """Step 1: the input file, then the state naming it, before anything is sent."""
        key = uuid.uuid4().hex
        submission = Submission(key=key, input=f"{self.stage}-{key}.jsonl", written_at=time.time())
        with atomic_write(self.folder / submission.input) as handle:
            handle.writelines(line for _, line in chunk)
        self.submissions.append(submission)
        self.requests[key] = {custom_id for custom_id, _ in chunk}
        self._save()
        return submission

    def _submit(self, submission: Submission) -> None:
        """Step 2: upload (unless an earlier run did), create with the key as metadata, record the batch id."""
        if submission.file_id is None:
            content = (self.folder / submission.input).read_bytes()
            uploaded = self._call("create_file", file=(submission.input, content, "application/jsonl"), purpose="batch")
            submission.file_id = uploaded.id
            self._save()
        batch = self._call(
            "create_batch",
            completion_window="24h",
            endpoint=ENDPOINT,
            input_file_id=submission.file_id,
            metadata={METADATA_KEY: submission.key},
        )
        submission.batch_id = batch.id
        self._save()

    def _find(self, submission: Submission) -> str | None:
        """Step 3: the id of a batch created for ``submission`` whose id a killed run did not record; the
        provider lists newest first, so the search stops at batches older than the submission."""
        after = None
        while True:
            page = self._call("list_batches", after=after, limit=100)
            for batch in page.data:
                if (batch.metadata or {}).get(METADATA_KEY) == submission.key:
                    return batch.id
            if not page.has_more or not page.data or page.data[-1].created_at < submission.written_at - LIST_SLACK_S:
                return None
            after = page.data[-1].id

    def _collect(
        self, submission: Submission, batch: Any, wanted: set[str], collect: Callable[[LineResult], None]
    ) -> None:
        """Step 4: every wanted line of the output and error files; a request with neither is failed by the
        batch's status (``batch_expired``, ``batch_failed``, ...); then the submission is forgotten."""
        found = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = self._call("file_content", file_id=file_id)
            for row in _rows(content.content):
                result = line_result(row)
                if result is not None and result.custom_id in wanted and result.custom_id not in found:
                    found.add(result.custom_id)
                    collect(result)
        missing = self.requests[submission.key] & wanted - found
        reason = "missing_from_batch" if batch.status == "completed" else f"batch_{batch.status}"
        for custom_id in sorted(missing):
            collect(LineResult(custom_id, error=reason))
        if batch.status == "failed":  # the provider refused the whole file: say why beside the counted reason
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            detail = str(errors[0].message or "").strip().split("\n")[0][:300] if errors else ""
            tqdm.write(f"warning: batch {batch.id} failed" + (f": {redact(detail)}" if detail else ""))
        self._forget(submission)

    def _forget(self, submission: Submission) -> None:
        self.submissions.remove(submission)
        del self.requests[submission.key]
        self._save()
        (self.folder / submission.input).unlink(missing_ok=True)

    def _save(self) -> None:
        write_json(self.state, [asdict(submission) for submission in self.submissions])

    def _custom_ids(self, submission: Submission) -> set[str]:
        path = self.folder / submission.input
        if not path.exists():
            raise UserError(
                f"{self.state} names {path}, which is missing: restore it, or delete {self.state} to submit anew "
                f"(batch {submission.batch_id or 'not recorded'} may still be charged)"
            )
        return {json.loads(line)["custom_id"] for line in path.read_text(encoding="utf-8").splitlines()}

    def _call(self, name: str, **arguments: Any) -> Any:
        """One call of LiteLLM's files and batches API. The synchronous ones: the asynchronous ones make an
        HTTP client per call whose clean-up fails noisily once the run's event loop is gone."""
        import litellm

        return getattr(litellm, name)(**arguments, **self.api)


def line_result(row: dict[str, Any]) -> LineResult | None:
    """A line of an output or error file as the request's outcome, failures named as the online path names
    them (``rate_limited``, ``bad_request``, ``server_error``, ...); None for a line without a custom id."""
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str):
        return None
    response = row.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200:
        choices = body.get("choices") if isinstance(body, dict) else None
        if choices and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict):
            return LineResult(custom_id, body=body)
        return LineResult(custom_id, error="server_error")  # a 200 without a completion, as online counts it
    if isinstance(status, int):
        return LineResult(custom_id, error=_status_reason(status))
    code = str((row.get("error") or {}).get("code") or "")
    return LineResult(custom_id, error=code if re.fullmatch(r"[a-z][a-z0-9_]{0,40}", code) else "batch_error")


def poll_interval() -> float:
    """Seconds between status checks: ``SYNTHEMBED_BATCH_POLL_S``, else 30."""
    value = os.environ.get(POLL_VARIABLE, str(POLL_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise UserError(f"{POLL_VARIABLE} must be a number of seconds, not {value!r}")
    return seconds


def _status_reason(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status == 400:
        return "bad_request"
    return "server_error" if status >= 500 else "request_failed"


def _chunks(lines: dict[str, dict[str, Any]]) -> Iterator[list[tuple[str, str]]]:
    """(custom id, batch-input line) in submissions of at most ``MAX_REQUESTS`` lines and ``MAX_BYTES``."""
    chunk: list[tuple[str, str]] = []
    size = 0
    for custom_id, body in lines.items():
        line = json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}) + "\n"
        if chunk and (len(chunk) == MAX_REQUESTS or size + len(line.encode()) > MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((custom_id, line))
        size += len(line.encode())
    if chunk:
        yield chunk


def _rows(content: bytes) -> Iterator[dict[str, Any]]:
    for line in content.decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row, dict):
                yield row
