"""The OpenAI Batch API (`/files`, `/batches`) through the official SDK: the batch capability
of the `openai` backend.

It shares the chat provider's client (key, URL credentials, timeouts, the SDK's retries),
so a batch reaches the server exactly as a direct request would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final, Protocol

from promptctl.errors import InputError, ProviderError
from promptctl.providers._openai_wire import chat_response, clean_text, error_message, request_body
from promptctl.providers.base import (
    ENV_MAX_RESULT_BYTES,
    BatchAPI,
    BatchInfo,
    ChatRequest,
    ChatResponse,
    RequestFailed,
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


class OpenAIBatches(BatchAPI):
    """`POST /files` (purpose batch), `POST /batches`, `GET /batches/ID`, `GET /files/ID/content`."""

    def __init__(self, provider: ChatClient) -> None:
        self._provider = provider
        self._openai = provider._openai
        self.client = provider.client
        self.name = provider.name
        self.base_url = provider.base_url

    def _fail(self, exc: Exception, what: str) -> Exception:
        """The error to raise for a failed call: a server without the Batch API is a usage
        error (exit 2) with the fix; anything else a provider failure (exit 3)."""
        where = f"endpoint {self.name} ({self.base_url})"
        status = getattr(exc, "status_code", None)
        message = clean_text(error_message(exc))
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
        return ProviderError(f"{where}: {what} failed: {clean_text(str(exc))}",
                             fix="check that the server is up and reachable, then resume with "
                             "promptctl eval --resume RUN")

    async def upload(self, path: str) -> str:
        try:
            with open(path, "rb") as handle:
                created = await self.client.files.create(
                    file=(Path(path).name, handle, "application/jsonl"), purpose="batch")
        except self._openai.APIError as exc:
            raise self._fail(exc, "POST /files") from None
        return str(created.id)

    async def submit(self, file_id: str, metadata: dict[str, str]) -> BatchInfo:
        try:
            batch = await self.client.batches.create(
                input_file_id=file_id, endpoint=CHAT_ENDPOINT, completion_window=COMPLETION_WINDOW,
                metadata=metadata)
        except self._openai.APIError as exc:
            raise self._fail(exc, "POST /batches") from None
        return _info(batch)

    async def retrieve(self, batch_id: str) -> BatchInfo:
        try:
            batch = await self.client.batches.retrieve(batch_id)
        except self._openai.APIError as exc:
            raise self._fail(exc, f"GET /batches/{batch_id}") from None
        return _info(batch)

    def request_line(self, custom_id: str, request: ChatRequest) -> bytes:

        line = {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT,
                "body": request_body(request)}
        return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    async def _lines(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """Each JSON object line of a file, read as it streams in (an output file may be
        hundreds of megabytes)."""
        async for raw in self._raw_lines(file_id):
            doc = _json_line(raw) if raw is not None else None
            if doc is not None:
                yield doc

    async def _raw_lines(self, file_id: str) -> AsyncIterator[bytes | None]:
        """Each line of a file as it streams in; None for a line over `limits.line_bytes`,
        which is skipped, not held.

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

    async def request_ids(self, file_id: str) -> AsyncIterator[str]:
        async for doc in self._lines(file_id):
            if isinstance(doc.get("custom_id"), str):
                yield doc["custom_id"]

    async def results(self, info: BatchInfo) -> AsyncIterator[tuple[str, ChatResponse | RequestFailed]]:
        for file_id in (info.output_file_id, info.error_file_id):
            if not file_id:
                continue
            async for doc in self._lines(file_id):
                if isinstance(doc.get("custom_id"), str):
                    yield doc["custom_id"], _result(doc)

    async def aclose(self) -> None:
        await self._provider.aclose()


def _json_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):g} MiB" if count >= 1024 * 1024 else f"{count:,} bytes"


def _result(doc: dict[str, Any]) -> ChatResponse | RequestFailed:
    """One line of an output or error file: the response, or why the request failed."""
    response = doc.get("response")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if status == 200:
            try:
                # A batch has no per-request latency; the engine stores none.
                return chat_response(body, latency_ms=0.0, attempts=1)
            except RequestFailed as exc:
                return exc
        message = error_message(_Errored(body)) if isinstance(body, dict) else str(body)[:500]
        return RequestFailed(f"HTTP {status}: {clean_text(message)}",
                             status=status if isinstance(status, int) else None)
    error = doc.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        message = clean_text(str(error.get("message") or "no message"))
        return RequestFailed(f"batch error{f' {code}' if code else ''}: {message}")
    return RequestFailed("the batch gave a malformed result line for this request")


class _Errored:
    """An error body in the shape `_error_message` reads (an SDK error's `body`)."""

    def __init__(self, body: Any) -> None:
        self.body = body


def _info(batch: Any) -> BatchInfo:
    counts = getattr(batch, "request_counts", None)
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    messages = tuple(str(getattr(e, "message", None) or getattr(e, "code", None) or e)
                     for e in errors)
    return BatchInfo(
        id=str(batch.id), status=str(batch.status), input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id, error_file_id=batch.error_file_id,
        completed=int(getattr(counts, "completed", 0) or 0),
        failed=int(getattr(counts, "failed", 0) or 0),
        total=int(getattr(counts, "total", 0) or 0), errors=messages)
