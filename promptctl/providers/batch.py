"""The OpenAI Batch API (`/files`, `/batches`) through the official SDK: the batch capability
of the `openai` backend.

It shares the chat provider's client (key, URL credentials, timeouts, the SDK's retries),
so a batch reaches the server exactly as a direct request would.

Nothing the server sends is trusted: batch objects are read as plain JSON (the SDK's models
keep wrong-typed fields as they came) and checked field by field, downloads are read line by
line under `ReadLimits`, and a result line that cannot be read becomes a failure, not a crash.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any, Final, NoReturn, Protocol

from promptctl.errors import InputError, ProviderError
from promptctl.providers._openai_wire import (
    chat_response,
    clean_text,
    error_message,
    int_or_none,
    request_body,
)
from promptctl.providers.base import (
    ENV_MAX_LINE_BYTES,
    ENV_MAX_RESULT_BYTES,
    BatchAPI,
    BatchInfo,
    ChatRequest,
    ChatResponse,
    RequestFailed,
    is_batch_ref,
)


class ChatClient(Protocol):
    """What the batches share of the `openai` backend's chat provider (`OpenAIProvider`):
    the SDK module, its client (key, URL credentials, timeouts, retries), its names."""

    @property
    def _openai(self) -> Any: ...

    @property
    def client(self) -> Any: ...

    @property
    def name(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    async def aclose(self) -> None: ...

CHAT_ENDPOINT: Final = "/v1/chat/completions"
COMPLETION_WINDOW: Final = "24h"
# A batch object or file object: the errors of 50,000 refused lines fit many times over.
MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
# Server text kept in an error row or message.
_MAX_MESSAGE = 500
# The reasons a failed batch gives, kept for its error rows.
_MAX_BATCH_ERRORS = 20
_STATUS = re.compile(r"[a-z][a-z_]{0,39}")
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,60}")
_MIB = 1024 * 1024


class OpenAIBatches(BatchAPI):
    """`POST /files` (purpose batch), `POST /batches`, `GET /batches/ID`, `GET /files/ID/content`."""

    def __init__(self, provider: ChatClient) -> None:
        import httpx2

        self._provider = provider
        self._openai = provider._openai
        self.client = provider.client
        self.name = provider.name
        self.base_url = provider.base_url
        # A download that breaks off midway fails in the HTTP client, not the SDK.
        self._broken: tuple[type[Exception], ...] = (httpx2.HTTPError, OSError)

    def _fail(self, exc: Exception, what: str) -> Exception:
        """The error to raise for a failed call: a server without the Batch API is a usage
        error (exit 2) with the fix; anything else a provider failure (exit 3)."""
        where = f"endpoint {self.name} ({self.base_url})"
        status = getattr(exc, "status_code", None)
        message = clean_text(error_message(exc)[:_MAX_MESSAGE])
        if status == 404 and what.startswith("GET"):
            return ProviderError(f"{where}: {what} answered HTTP 404 (it no longer exists, or "
                                 f"belongs to another account): {message}",
                                 fix="start a new run: the stored batch cannot be re-attached; "
                                 "batch files expire after 30 days")
        if status in (404, 405, 501):
            return InputError(f"{where} does not offer the Batch API: {what} answered HTTP "
                              f"{status}: {message}",
                              fix="drop --batch to send the requests directly, or use an endpoint "
                              "that serves /v1/files and /v1/batches (the OpenAI API)")
        if status in (401, 403):
            return ProviderError(f"{where} refused the credentials for {what}: HTTP {status}: "
                                 f"{message}", fix="check the API key (OPENAI_API_KEY, or the "
                                 "endpoint's api_key_env in promptctl.yaml)")
        if status is not None:
            return ProviderError(f"{where}: {what} failed: HTTP {status}: {message}",
                                 fix="try again later; a batch run resumes with "
                                 "promptctl eval --resume RUN")
        return ProviderError(f"{where}: {what} failed: {clean_text(str(exc)[:_MAX_MESSAGE])}",
                             fix="check that the server is up and reachable, then resume with "
                             "promptctl eval --resume RUN")

    def _unusable(self, what: str, problem: str) -> NoReturn:
        """A server answer that breaks the Batch API's contract: exit 3, the run resumable."""
        raise ProviderError(f"endpoint {self.name} ({self.base_url}): {what} {problem}",
                            fix="the server does not answer as the OpenAI Batch API does; once it "
                            "does, promptctl eval --resume RUN picks the run up (or drop --batch "
                            "to send the requests directly)")

    async def _document(self, call: Any, what: str) -> dict[str, Any]:
        """The JSON object a call answers, read under MAX_DOCUMENT_BYTES."""
        data = bytearray()
        try:
            async with call as response:
                async for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_DOCUMENT_BYTES:
                        self._unusable(what, f"answered over {MAX_DOCUMENT_BYTES // _MIB} MiB; "
                                       "stopped reading")
        except self._openai.APIError as exc:
            raise self._fail(exc, what) from None
        except self._broken as exc:
            raise self._fail(exc, what) from None
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            self._unusable(what, "answered a body that is not JSON")
        if not isinstance(doc, dict):
            self._unusable(what, f"answered {_json_kind(doc)}, not an object")
        return doc

    async def upload(self, path: str) -> str:
        what = "POST /files"
        with open(path, "rb") as handle:
            doc = await self._document(self.client.files.with_streaming_response.create(
                file=(Path(path).name, handle, "application/jsonl"), purpose="batch"), what)
        file_id = doc.get("id")
        if not is_batch_ref(file_id):
            self._unusable(what, f"gave the uploaded file the id {_shown(file_id)}, not a file id")
        return str(file_id)

    async def submit(self, file_id: str, metadata: dict[str, str]) -> BatchInfo:
        what = "POST /batches"
        doc = await self._document(self.client.batches.with_streaming_response.create(
            input_file_id=file_id, endpoint=CHAT_ENDPOINT, completion_window=COMPLETION_WINDOW,
            metadata=metadata), what)
        return self._submitted(doc, what)

    def _submitted(self, doc: dict[str, Any], what: str) -> BatchInfo:
        """The batch a submission created: its id must be right, since a run that cannot
        store it would submit its requests again on resume; the rest is read again by polls."""
        batch_id = doc.get("id")
        if not is_batch_ref(batch_id):
            self._unusable(what, f"answered a batch whose id is {_shown(batch_id)}, not a batch id")
        status = doc.get("status")
        if not isinstance(status, str) or _STATUS.fullmatch(status) is None:
            doc = {**doc, "status": "submitted"}
        for key in ("input_file_id", "output_file_id", "error_file_id"):
            if not is_batch_ref(doc.get(key)):
                doc = {**doc, key: None}
        return self._info(doc, what, None)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        what = f"GET /batches/{batch_id}"
        doc = await self._document(self.client.batches.with_streaming_response.retrieve(batch_id),
                                   what)
        return self._info(doc, what, batch_id)

    def _info(self, doc: dict[str, Any], what: str, expected: str | None) -> BatchInfo:
        """A batch object, checked: what decides where promptctl goes next (its id, status
        and file ids) must be right or the call fails; what is only shown is dropped when
        malformed (counts, reasons, an expiry time that the caller replaces by a default)."""
        batch_id = doc.get("id")
        if not is_batch_ref(batch_id):
            self._unusable(what, f"answered a batch whose id is {_shown(batch_id)}, not a batch id")
        if expected is not None and batch_id != expected:
            self._unusable(what, f"answered batch {_shown(batch_id)} instead")
        what = f"{what} (batch {batch_id})" if expected is None else what
        status = doc.get("status")
        if not isinstance(status, str) or _STATUS.fullmatch(status) is None:
            self._unusable(what, f"gave the status {_shown(status)}, not a batch status")
        for key in ("input_file_id", "output_file_id", "error_file_id"):
            value = doc.get(key)
            if value is not None and not is_batch_ref(value):
                self._unusable(what, f"gave the {key} {_shown(value)}, not a file id")
        counts = doc.get("request_counts")
        counts = counts if isinstance(counts, dict) else {}
        return BatchInfo(
            id=batch_id, status=status, input_file_id=doc.get("input_file_id"),
            output_file_id=doc.get("output_file_id"), error_file_id=doc.get("error_file_id"),
            completed=int_or_none(counts.get("completed")) or 0,
            failed=int_or_none(counts.get("failed")) or 0,
            total=int_or_none(counts.get("total")) or 0,
            errors=_batch_errors(doc.get("errors")),
            expires_at=_epoch(doc.get("expires_at")),
            metadata=_metadata(doc.get("metadata")))

    def request_line(self, custom_id: str, request: ChatRequest) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT,
                "body": request_body(request)}
        return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    async def _lines(self, file_id: str) -> AsyncGenerator[bytes | None]:
        """Each line of a file as it streams in (an output file may be hundreds of
        megabytes); None for a line over `limits.line_bytes`, which is skipped, not held.

        Each chunk is split once and a line spanning chunks is joined once, so the work
        is linear in the file's size however long its lines are.
        """
        what = f"GET /files/{file_id}/content"
        line_cap, file_cap = self.limits.line_bytes, self.limits.file_bytes
        parts: list[bytes] = []  # the line so far, when it spans chunks
        held = 0  # its length; -1 once it is over the cap (the rest of it is dropped)
        total = 0
        try:
            async with self.client.files.with_streaming_response.content(file_id) as response:
                async for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > file_cap:
                        raise ProviderError(
                            f"endpoint {self.name} ({self.base_url}): {what}: the file is over "
                            f"{_size(file_cap)} (${ENV_MAX_RESULT_BYTES}); stopped reading it",
                            fix=f"if the batch's files are really this large, raise "
                            f"{ENV_MAX_RESULT_BYTES} (bytes) and resume with promptctl eval "
                            "--resume RUN")
                    pieces = chunk.split(b"\n")
                    for piece in pieces[:-1]:
                        if held < 0 or held + len(piece) > line_cap:
                            yield None
                        else:
                            yield b"".join((*parts, piece)) if parts else piece
                        parts, held = [], 0
                    rest = pieces[-1]
                    if held >= 0 and rest:
                        if held + len(rest) > line_cap:
                            parts, held = [], -1
                        else:
                            parts.append(rest)
                            held += len(rest)
                if held < 0:
                    yield None
                elif parts:
                    yield b"".join(parts)
        except self._openai.APIError as exc:
            raise self._fail(exc, what) from None
        except self._broken as exc:
            raise self._fail(exc, what) from None

    async def request_lines(self, file_id: str) -> AsyncGenerator[tuple[str, Any]]:
        number = 0
        async with aclosing(self._lines(file_id)) as lines:
            async for raw in lines:
                number += 1
                doc, problem = _json_line(raw, self.limits.line_bytes)
                if doc is None and problem is None:
                    continue
                custom = doc.get("custom_id") if doc is not None else None
                if not isinstance(custom, str):
                    # Which requests the batch holds is what keeps a resume from paying twice.
                    self._unusable(f"GET /files/{file_id}/content",
                                   f"returned the run's uploaded requests with line {number} "
                                   f"unreadable ({problem or 'no custom_id'}), so which requests "
                                   "the batch holds is unknown")
                yield custom, doc

    async def results(self, info: BatchInfo) -> AsyncGenerator[tuple[str | None,
                                                                     ChatResponse | RequestFailed]]:
        for file_id in (info.output_file_id, info.error_file_id):
            if not file_id:
                continue
            async with aclosing(self._lines(file_id)) as lines:
                async for raw in lines:
                    doc, problem = _json_line(raw, self.limits.line_bytes)
                    if doc is None:
                        if problem is not None:
                            yield None, RequestFailed(f"a line of its file {file_id} {problem}")
                        continue
                    custom = doc.get("custom_id")
                    if not isinstance(custom, str):
                        yield None, RequestFailed(f"a line of its file {file_id} has the "
                                                  f"custom_id {_shown(custom)}, not a string")
                        continue
                    yield custom, _result(doc)

    async def aclose(self) -> None:
        await self._provider.aclose()


def _json_line(raw: bytes | None, cap: int) -> tuple[dict[str, Any] | None, str | None]:
    """A line as a JSON object, or why not; (None, None) for a blank line."""
    if raw is None:
        return None, f"is over {_size(cap)} (${ENV_MAX_LINE_BYTES}) and was not read"
    if not raw.strip():
        return None, None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None, "is not JSON"
    if not isinstance(doc, dict):
        return None, f"is {_json_kind(doc)}, not an object"
    return doc, None


def _result(doc: dict[str, Any]) -> ChatResponse | RequestFailed:
    """One line of an output or error file: the response, or why the request failed."""
    response = doc.get("response")
    if isinstance(response, dict):
        status = int_or_none(response.get("status_code"))
        if status is None:
            return RequestFailed(f"the batch gave the status_code "
                                 f"{_shown(response.get('status_code'))} for this request")
        body = response.get("body")
        if status == 200:
            try:
                # A batch has no per-request latency; the engine stores none.
                return chat_response(body, latency_ms=0.0, attempts=1)
            except RequestFailed as exc:
                return exc
        message = error_message(_Errored(body)) if isinstance(body, dict) else str(body)
        return RequestFailed(f"HTTP {status}: {clean_text(message[:_MAX_MESSAGE])}", status=status)
    error = doc.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        shown_code = f" {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
        text = error.get("message")
        message = clean_text(text[:_MAX_MESSAGE]) if isinstance(text, str) and text else "no message"
        return RequestFailed(f"batch error{shown_code}: {message}")
    return RequestFailed("the batch gave a malformed result line for this request")


class _Errored:
    """An error body in the shape `_error_message` reads (an SDK error's `body`)."""

    def __init__(self, body: Any) -> None:
        self.body = body


def _batch_errors(errors: Any) -> tuple[str, ...]:
    """Why a batch failed as a whole: the messages (or codes) of its `errors.data`."""
    data = errors.get("data") if isinstance(errors, dict) else None
    if not isinstance(data, list):
        return ()
    messages = []
    for entry in data[:_MAX_BATCH_ERRORS]:
        if not isinstance(entry, dict):
            continue
        text = next((v for v in (entry.get("message"), entry.get("code"))
                     if isinstance(v, str) and v), None)
        if text is not None:
            messages.append(clean_text(text[:_MAX_MESSAGE]))
    return tuple(messages)


def _epoch(value: Any) -> float | None:
    """A time in seconds since the epoch; None unless a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _json_kind(value: Any) -> str:
    if value is None:
        return "JSON null"
    if isinstance(value, list):
        return "a JSON array"
    return "a JSON " + ("string" if isinstance(value, str) else
                        "boolean" if isinstance(value, bool) else "number")


def _shown(value: Any) -> str:
    """A server value in a message: short, and with no secret or terminal control in it."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    return clean_text(json.dumps(value)[:60])


def _size(count: int) -> str:
    return f"{count / _MIB:g} MiB" if count >= _MIB else f"{count:,} bytes"
