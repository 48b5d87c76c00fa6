"""The HTTP client the `openai` backend hands the SDK, with two limits httpx2 lacks.

Each attempt of a chat or embeddings request has a wall-clock deadline, headers and body
together: httpx2's timeouts bound each read, so a server sending a byte every few seconds
kept one attempt alive for as long as it liked. And each response read whole is capped once
decompressed: httpx2 inflates a body as it reads it, so a few megabytes of gzip became
gigabytes in memory.

It loads only when a provider opens (it imports the SDK and httpx2).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai

MIB = 1024 * 1024


class ResponseTooLarge(Exception):
    """A response past the cap. Not an httpx2 error, so the SDK passes it on at once instead
    of retrying: a server that sent too much once would most likely send it again."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the response is larger than {limit} bytes once decompressed")


class AttemptDeadline(httpx2.TimeoutException):
    """An attempt that outlived its deadline: a timeout to the SDK, which retries it as one."""


# The seconds each attempt of the request under way in this context may take (None: no
# deadline). `OpenAIProvider` sets it around chat and embeddings requests only: a Batch API
# upload of up to 200 MB keeps httpx2's per-read timeouts rather than one attempt's deadline.
attempt_seconds: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "promptctl_attempt_seconds", default=None)

# Called with an attempt's transport error (a timeout, a dropped connection) before the SDK
# sees it; it may raise another error in its place, which the SDK passes on without
# retrying (`OpenAIProvider` does so when the run's allowance cannot cover a retry).
on_transport_error: contextvars.ContextVar[Callable[[Exception], None] | None] = \
    contextvars.ContextVar("promptctl_on_transport_error", default=None)


class _Decoded(httpx2.AsyncByteStream):
    """A response's body decompressed, ending in ResponseTooLarge past `limit` bytes."""

    def __init__(self, response: httpx2.Response, limit: int) -> None:
        self._raw = response.stream
        # A twin over the same bytes decodes them with httpx2's own decoders (gzip, deflate,
        # and brotli or zstd when installed), which inflate in pieces of at most 1 MiB, so
        # the size is counted as it grows rather than after the whole body is in memory.
        self._twin = httpx2.Response(response.status_code, headers=response.headers,
                                     stream=response.stream, request=response.request)
        self._limit = limit

    @property
    def elapsed(self) -> datetime.timedelta | None:
        # `Response.elapsed` reads it here once the body is read.
        elapsed: datetime.timedelta | None = getattr(self._raw, "elapsed", None)
        return elapsed

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async with contextlib.aclosing(self._twin.aiter_bytes()) as pieces:
            async for piece in pieces:
                size += len(piece)
                if size > self._limit:
                    raise ResponseTooLarge(self._limit)
                yield piece

    async def aclose(self) -> None:
        await self._twin.aclose()


class _Limited(httpx2.AsyncClient):
    """The limits, over either of the SDK's clients (httpx2's transport or aiohttp's), and
    whatever transport a proxy from the environment adds."""

    def __init__(self, *, max_response_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_response_bytes = max_response_bytes

    async def send(self, request: httpx2.Request, *, stream: bool = False,
                   **kwargs: Any) -> httpx2.Response:
        if stream:
            # The caller reads the body piece by piece and keeps none of it whole (Batch API
            # result files, which may be hundreds of megabytes): neither limit fits it.
            return await super().send(request, stream=True, **kwargs)
        try:
            return await self._send_whole(request, **kwargs)
        except httpx2.TransportError as exc:
            hook = on_transport_error.get()
            if hook is not None:
                hook(exc)
            raise

    async def _send_whole(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        seconds = attempt_seconds.get()
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                response = await super().send(request, stream=True, **kwargs)
                try:
                    await self._read(response)
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError:
            if seconds is None or not deadline.expired():
                raise
            raise AttemptDeadline(f"no complete response within {seconds:g} s",
                                  request=request) from None
        return response

    async def _read(self, response: httpx2.Response) -> None:
        """Read the body whole, decompressed, failing as soon as it passes the cap."""
        limit = self.max_response_bytes
        encoded = "content-encoding" in response.headers
        declared = response.headers.get("content-length", "")
        if not encoded and declared.isdigit() and int(declared) > limit:
            raise ResponseTooLarge(limit)  # said so up front: not a byte need be read
        response.stream = _Decoded(response, limit)
        if encoded:
            # The stream now yields the decoded bytes, which the response must not decode again.
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        await response.aread()


class _HttpxClient(_Limited, openai.DefaultAsyncHttpxClient):
    pass


class _AioHttpClient(_Limited, openai.DefaultAioHttpClient):
    pass


def client(*, aiohttp: bool, max_response_bytes: int, **kwargs: Any) -> httpx2.AsyncClient:
    """An HTTP client for the SDK with the SDK's defaults, over aiohttp or httpx2's own
    transport; `kwargs` go to httpx2 (limits, TLS, event hooks)."""
    kind = _AioHttpClient if aiohttp else _HttpxClient
    return kind(max_response_bytes=max_response_bytes, **kwargs)
