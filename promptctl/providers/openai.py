"""OpenAI-compatible servers through the official `openai` SDK: the `openai` backend.

Retries are the SDK's own (429, 5xx, timeouts and dropped connections, with exponential
backoff and jitter, honouring Retry-After and retry-after-ms); promptctl counts them and
caps how long a server may ask it to wait. Each attempt has a wall-clock deadline and each
response a size cap (see `_http`). Whatever a server sends back, however malformed, slow
or large, becomes a completion or a row error: never a crash.
"""

from __future__ import annotations

import contextvars
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from promptctl import allowance, redact
from promptctl.errors import InputError, ParamRejected, ProviderError
from promptctl.providers._openai_wire import (
    chat_response,
    clean_text,
    error_message,
    int_or_none,
    request_body,
)
from promptctl.providers.base import (
    Backend,
    BatchAPI,
    BatchSupport,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Price,
    Provider,
    RequestFailed,
)
from promptctl.providers.batch import OpenAIBatches

if TYPE_CHECKING:
    from promptctl.providers import ResolvedModel, ServerURL

DEFAULT_MAX_RETRIES = 4
# Per attempt, from sending to the last byte of the answer. An evaluation's answers are short;
# a server that has not answered in a minute is down, and five attempts at the SDK's own
# ten-minute default cost most of an hour per row.
DEFAULT_TIMEOUT = 60.0
# The largest response read, once decompressed. The largest real ones are far smaller: a
# completion of 128k tokens is about 0.5 MB of text (3 MB at worst, JSON-escaped), and 64
# embeddings of 3072 floats (a similarity batch) about 7 MB of JSON. Each request in flight
# may hold this much, twice over while its pieces are joined: 16 MiB keeps the default 8
# connections within about a quarter of a gigabyte, whatever the server sends.
DEFAULT_MAX_RESPONSE_MB = 16.0
# The longest wait a server's Retry-After is obeyed for; a longer request is capped to this
# (the SDK alone would not retry at all), and the row's error says what the server asked.
MAX_RETRY_AFTER = 60.0
POOL_SIZE = 8
# From this many connections the SDK's aiohttp transport (about a third less CPU per
# request) pays for its extra ~0.35 s of import.
AIOHTTP_FROM = 16
# The largest token count taken as real: usage fields are integers a store must hold.


class _Attempt:
    """One request's attempts, seen by the HTTP client's hooks."""

    __slots__ = ("count", "started", "asked_wait", "max_attempts", "not_retried")

    def __init__(self, max_attempts: int = DEFAULT_MAX_RETRIES + 1) -> None:
        self.count = 0
        self.started = time.monotonic()
        self.asked_wait: float | None = None
        self.max_attempts = max_attempts
        # Why a failure the SDK would have retried was not (the allowance is spent).
        self.not_retried: str | None = None


# A context variable reaches the HTTP client's hooks from the task that made the call.
_attempt: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "promptctl_attempt", default=None)


async def _on_request(request: Any) -> None:
    # Before anything is sent: an attempt the run's allowance cannot cover raises here, and
    # the SDK passes that error on without retrying.
    allowance.admit()
    state = _attempt.get()
    if state is not None:
        state.count += 1
        state.started = time.monotonic()


def _on_transport_error(exc: Exception) -> None:
    """A timeout or dropped connection whose retry the run's allowance could not cover:
    failed at once, rather than after the backoff before a retry that would be refused."""
    state = _attempt.get()
    if state is None or state.count >= state.max_attempts:
        return
    why = allowance.no_retry()
    if why is not None:
        state.not_retried = why
        raise allowance.AllowanceSpent(f"the attempt failed: {exc}") from exc


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        import datetime

        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return seconds if math.isfinite(seconds) else None


# The statuses the SDK retries (besides a server's own x-should-retry: true).
_RETRIED = (408, 409, 429)


async def _on_response(response: Any) -> None:
    """Cap a server's Retry-After at MAX_RETRY_AFTER so the request is still retried; stop
    a retry the run's allowance could not cover."""
    headers = response.headers
    state = _attempt.get()
    if state is not None and state.count < state.max_attempts and (
            response.status_code in _RETRIED or response.status_code >= 500):
        # The allowance never grows back: the retry would be refused after its backoff, so
        # the SDK is told not to wait for it.
        why = allowance.no_retry()
        if why is not None:
            state.not_retried = why
            headers["x-should-retry"] = "false"
            return
    asked = _retry_after(headers.get("retry-after"))
    asked_ms = headers.get("retry-after-ms")
    if asked_ms is not None:
        try:
            asked = float(asked_ms) / 1000.0
        except ValueError:
            pass
    if asked is not None and asked > MAX_RETRY_AFTER:
        if state is not None:
            state.asked_wait = asked
        headers["retry-after"] = str(int(MAX_RETRY_AFTER))
        if "retry-after-ms" in headers:
            del headers["retry-after-ms"]


def _dropped_connection(exc: BaseException) -> BaseException | None:
    """The aiohttp error behind a "timeout", when it was in fact a dropped or refused connection.

    The SDK's aiohttp transport maps every aiohttp connection error to a connect
    timeout; the row should say what happened.
    """
    cause = exc.__cause__
    while cause is not None:
        module = type(cause).__module__
        if module.startswith("aiohttp") and not isinstance(cause, TimeoutError) \
                and "Timeout" not in type(cause).__name__:
            return cause
        cause = cause.__cause__
    return None


class OpenAIProvider(Provider):
    """Any server that speaks the OpenAI chat completions API."""

    def __init__(self, name: str, base_url: str | None, api_key: str, *, concurrency: int = 8,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout: float | None = None,
                 max_response_mb: float | None = None, aiohttp: bool | None = None,
                 server: ServerURL | None = None) -> None:
        import base64

        import httpx2
        import openai

        import promptctl.providers._http as _http

        self.name = name
        self.max_retries = max_retries
        self._openai = openai
        self._http = _http
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.max_response_mb = max_response_mb or DEFAULT_MAX_RESPONSE_MB
        redact.register(api_key)
        use_aiohttp = concurrency >= AIOHTTP_FROM if aiohttp is None else aiohttp
        headers: dict[str, str] = {}
        query: dict[str, str] = {}
        if server is not None:
            query = dict(server.query)
            if server.basic_auth is not None:
                user, password = server.basic_auth
                headers["Authorization"] = "Basic " + base64.b64encode(
                    f"{user}:{password}".encode()).decode("ascii")
        # `concurrency` connections in all, split over pools of at most POOL_SIZE: the HTTP
        # pool scans every connection it holds on each request, which made one pool of 50
        # cost ~0.6 ms of CPU per request, the largest single cost at high concurrency.
        shards = max(1, math.ceil(concurrency / POOL_SIZE))
        # One TLS context for all pools: loading the CA bundle costs ~50 ms each time.
        tls = httpx2.create_ssl_context()
        self.clients = []
        sizes = [concurrency // shards + (1 if i < concurrency % shards else 0) for i in range(shards)]
        for size in sizes:
            limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
            http_client = _http.client(
                aiohttp=use_aiohttp, max_response_bytes=int(self.max_response_mb * _http.MIB),
                limits=limits, verify=tls,
                event_hooks={"request": [_on_request], "response": [_on_response]})
            self.clients.append(openai.AsyncOpenAI(
                api_key=api_key, base_url=base_url, max_retries=max_retries,
                timeout=self.timeout, http_client=http_client,
                default_headers=headers or None, default_query=query or None))
        self.client = self.clients[0]
        self._free = list(sizes)
        self.base_url = server.shown if server is not None and server.shown else \
            str(self.client.base_url).rstrip("/")
        self._raw = httpx2.Response

    async def _post(self, path: str, body: dict[str, Any], state: _Attempt) -> Any:
        """POST through the least busy connection pool; the decoded JSON body."""
        # The pool with the most free connections, so no request waits in one pool
        # while another has room.
        shard = max(range(len(self._free)), key=self._free.__getitem__)
        self._free[shard] -= 1
        try:
            raw = await self.clients[shard].post(path, body=body, cast_to=self._raw)
        finally:
            self._free[shard] += 1
        return raw.json()

    async def _call(self, path: str, body: dict[str, Any], model: str,
                    params: dict[str, Any]) -> tuple[Any, _Attempt]:
        """One request with the SDK's retries; every failure a RequestFailed or a fatal error."""
        openai = self._openai
        state = _Attempt(self.max_retries + 1)
        token = _attempt.set(state)
        deadline = self._http.attempt_seconds.set(self.timeout)
        failing = self._http.on_transport_error.set(_on_transport_error)
        try:
            data = await self._post(path, body, state)
        except self._http.ResponseTooLarge:
            # Not retried: the server would most likely send the same answer again.
            raise RequestFailed(self._failure(
                f"the response was larger than {self.max_response_mb:g} MiB once decompressed; "
                "if such answers are expected, pass --max-response-mb MB or raise "
                "max_response_mb: of the endpoint in promptctl.yaml", state),
                attempts=max(1, state.count)) from None
        except allowance.AllowanceSpent as exc:
            raise RequestFailed(self._failure(str(exc), state), attempts=state.count) from None
        except openai.APIStatusError as exc:
            self._raise_fatal(exc, model, params)
            raise RequestFailed(self._failure(f"HTTP {exc.status_code}: {error_message(exc)}", state),
                                status=exc.status_code, attempts=state.count) from None
        except openai.APITimeoutError as exc:
            dropped = _dropped_connection(exc)
            if dropped is not None:
                raise RequestFailed(self._failure(f"connection failed: {dropped}", state),
                                    attempts=state.count, unreachable=True) from None
            raise RequestFailed(self._failure(
                f"request timed out: no complete response within {self.timeout:g} s, the "
                "deadline of each attempt; if the server is only slow, pass --timeout SECONDS or "
                "raise timeout: of the endpoint in promptctl.yaml", state),
                attempts=state.count, unreachable=True) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise RequestFailed(self._failure(f"connection failed: {cause}", state),
                                attempts=state.count, unreachable=True) from None
        except openai.APIError as exc:
            raise RequestFailed(self._failure(f"bad response: {error_message(exc)}", state),
                                attempts=state.count) from None
        except RecursionError:
            raise RequestFailed("the server sent a malformed response (JSON nested too deeply)",
                                attempts=max(1, state.count)) from None
        except (ValueError, UnicodeError) as exc:
            raise RequestFailed(self._failure(f"the server sent a malformed response: {exc}", state),
                                attempts=max(1, state.count)) from None
        finally:
            self._http.on_transport_error.reset(failing)
            self._http.attempt_seconds.reset(deadline)
            _attempt.reset(token)
        return data, state

    async def complete(self, request: ChatRequest) -> ChatResponse:
        # The SDK's generic post keeps its retries, backoff, auth and error types but
        # skips its per-request TypedDict transform and pydantic parsing, which cost
        # about 2 ms of CPU per request: the bottleneck at high concurrency. Every
        # parameter goes in the body as given, so server-specific ones (top_k, min_p)
        # reach vLLM or llama.cpp too.
        data, state = await self._call("/chat/completions", request_body(request), request.model,
                                       request.params)
        return chat_response(data, latency_ms=(time.monotonic() - state.started) * 1000.0,
                             attempts=max(1, state.count))

    async def embed(self, model: str, texts: list[str]) -> EmbeddingResponse:
        data, state = await self._call("/embeddings", {"model": model, "input": texts}, model, {})
        attempts = max(1, state.count)
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            got = len(items) if isinstance(items, list) else "no"
            raise RequestFailed(f"the embeddings response has {got} vectors for {len(texts)} texts",
                                attempts=attempts)
        vectors: list[list[float] | None] = [None] * len(texts)
        for position, item in enumerate(items):
            index = item.get("index", position) if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(texts) or not isinstance(vector, list) \
                    or not vector or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                             and math.isfinite(v) for v in vector):
                raise RequestFailed("the embeddings response holds a malformed vector", attempts=attempts)
            vectors[index] = [float(v) for v in vector]
        if any(v is None for v in vectors):
            raise RequestFailed("the embeddings response misses a vector", attempts=attempts)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return EmbeddingResponse([v for v in vectors if v is not None],
                                 prompt_tokens=int_or_none(usage.get("prompt_tokens")), attempts=attempts)

    def _failure(self, message: str, state: _Attempt) -> str:
        text = clean_text(message)
        if state.not_retried is not None:
            text += f" (not retried: {state.not_retried})"
        if state.asked_wait is not None:
            text += (f" (the server asked to wait {state.asked_wait:.0f} s before retrying; "
                     f"promptctl waits at most {MAX_RETRY_AFTER:.0f} s between attempts)")
        return text

    def _raise_fatal(self, exc: Any, model: str, params: dict[str, Any]) -> None:
        """Failures that every row would meet stop the run at once."""
        status = exc.status_code
        message = clean_text(error_message(exc))
        where = f"endpoint {self.name} ({self.base_url})"
        if status in (401, 403):
            raise ProviderError(f"{where} refused the credentials: HTTP {status}: {message}",
                                fix="check the API key (OPENAI_API_KEY, or the endpoint's "
                                "api_key_env in promptctl.yaml)")
        if status == 404:
            raise InputError(f"{where} does not know model {model!r}: {message}",
                             fix="check the model name (--model or model: in the prompt file)")
        if status in (400, 422):
            lowered = message.lower()
            for name in params:
                if re.search(rf"\b{re.escape(name.lower())}\b", lowered):
                    raise ParamRejected(f"{where} rejected the parameter {name}="
                                        f"{params[name]!r}: {message}", param=name,
                                        fix=f"remove or change params.{name} in the prompt file "
                                        "for this endpoint")

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


# --- the backend ------------------------------------------------------------------------------

# USD per million tokens for OpenAI chat models (list prices, standard tier).
# A dated snapshot such as gpt-4o-mini-2024-07-18 takes its family's price (see
# `Config.price`); promptctl.yaml `pricing:` overrides any of these.
BUILTIN_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.00, 60.00),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
}


def _open(resolved: ResolvedModel, concurrency: int, params: dict[str, Any]) -> Provider:
    max_retries = resolved.endpoint.setting("max_retries") if resolved.endpoint is not None else None
    return OpenAIProvider(resolved.endpoint_name, resolved.base_url, resolved.api_key(),
                          concurrency=concurrency, timeout=resolved.timeout,
                          max_response_mb=resolved.max_response_mb,
                          max_retries=DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries),
                          server=resolved.server)


def _preflight(resolved: ResolvedModel, params: dict[str, Any]) -> None:
    resolved.api_key()


def _token_counter(model: str) -> tuple[Callable[[str], int], str]:
    """tiktoken for OpenAI models when it is installed, else characters / 4."""
    try:
        import tiktoken
    except ImportError:
        return (lambda text: max(1, (len(text) + 3) // 4)), "estimate: characters / 4"
    try:
        enc = tiktoken.encoding_for_model(model)
    except KeyError:
        enc = tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - tiktoken may need to download its tables
        return (lambda text: max(1, (len(text) + 3) // 4)), "estimate: characters / 4"
    return (lambda text: len(enc.encode(text))), f"tiktoken {enc.name}"


def _open_batches(resolved: ResolvedModel) -> BatchAPI:
    """The batch API of an `openai` endpoint (one connection is plenty for a few calls)."""
    provider = _open(resolved, 1, {})
    assert isinstance(provider, OpenAIProvider)
    return OpenAIBatches(provider)


# The Batch API bills every OpenAI model at half its standard price.
BATCH_PRICE_FACTOR = 0.5

BACKEND = Backend(
    type="openai",
    open=_open,
    settings={"base_url": str, "api_key_env": str, "max_retries": int, "supports_n": bool},
    required=("base_url",),
    preflight=_preflight,
    default_concurrency=8,
    builtin_price=BUILTIN_PRICES.get,
    token_counter=_token_counter,
    batch=BatchSupport(open=_open_batches, price_factor=BATCH_PRICE_FACTOR),
)
