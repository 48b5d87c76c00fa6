"""OpenAI-compatible chat completions through the official `openai` SDK.

Retries are the SDK's own (429, 5xx, timeouts and dropped connections, with
exponential backoff and jitter, honouring Retry-After and retry-after-ms);
promptctl only counts them.
"""

from __future__ import annotations

import contextvars
import math
import re
import time
from typing import Any

from promptctl.errors import InputError, ProviderError
from promptctl.providers.base import ChatRequest, ChatResponse, Provider, RequestFailed

DEFAULT_MAX_RETRIES = 4
DEFAULT_TIMEOUT = 120.0
POOL_SIZE = 8

# Per request: [attempts, monotonic start of the latest attempt]. A context
# variable reaches the HTTP client's hooks from the task that made the call.
_attempt: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "promptctl_attempt", default=None)


async def _on_request(request: Any) -> None:
    state = _attempt.get()
    if state is not None:
        state[0] += 1
        state[1] = time.monotonic()


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", None) or exc)


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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OpenAIProvider(Provider):
    """Any server that speaks the OpenAI chat completions API."""

    def __init__(self, name: str, base_url: str | None, api_key: str, *, concurrency: int = 8,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = DEFAULT_TIMEOUT,
                 aiohttp: bool = False) -> None:
        import httpx2
        import openai

        self.name = name
        self._openai = openai
        # Some servers and gateways echo the key they were given in error messages.
        self._secret = api_key if len(api_key) >= 8 else None
        # `concurrency` connections in all, split over pools of at most POOL_SIZE: the HTTP
        # pool scans every connection it holds on each request, which made one pool of 50
        # cost ~0.6 ms of CPU per request, the largest single cost at high concurrency.
        shards = max(1, math.ceil(concurrency / POOL_SIZE))
        # One TLS context for all pools: loading the CA bundle costs ~50 ms each time.
        tls = httpx2.create_ssl_context()
        self.clients = []
        for i in range(shards):
            size = concurrency // shards + (1 if i < concurrency % shards else 0)
            limits = httpx2.Limits(max_connections=size, max_keepalive_connections=size)
            # The SDK's aiohttp transport (the `aiohttp` extra) spends about a third less CPU
            # per request than its default; it costs ~0.35 s more to import, so it is for
            # the sender processes of high-concurrency runs.
            client_class = openai.DefaultAioHttpClient if aiohttp else openai.DefaultAsyncHttpxClient
            http_client = client_class(limits=limits, verify=tls, event_hooks={"request": [_on_request]})
            self.clients.append(openai.AsyncOpenAI(
                api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout,
                http_client=http_client))
        self.client = self.clients[0]
        self._free = [concurrency // shards + (1 if i < concurrency % shards else 0)
                      for i in range(shards)]
        self.base_url = str(self.client.base_url).rstrip("/")
        self._raw = httpx2.Response

    async def complete(self, request: ChatRequest) -> ChatResponse:
        openai = self._openai
        state: list[float] = [0, time.monotonic()]
        token = _attempt.set(state)
        # The SDK's generic post keeps its retries, backoff, auth and error types but
        # skips its per-request TypedDict transform and pydantic parsing, which cost
        # about 2 ms of CPU per request: the bottleneck at high concurrency. Every
        # parameter goes in the body as given, so server-specific ones (top_k, min_p)
        # reach vLLM or llama.cpp too.
        params = dict(request.params)
        extra = params.pop("extra_body", None)  # the SDK's spelling, accepted in prompt params
        body = {**params, **(extra if isinstance(extra, dict) else {}),
                "model": request.model, "messages": request.messages}
        try:
            # The pool with the most free connections, so no request waits in one pool
            # while another has room.
            shard = max(range(len(self._free)), key=self._free.__getitem__)
            self._free[shard] -= 1
            try:
                raw = await self.clients[shard].post("/chat/completions", body=body, cast_to=self._raw)
            finally:
                self._free[shard] += 1
            data = raw.json()
        except openai.APIStatusError as exc:
            self._raise_fatal(exc, request)
            raise RequestFailed(f"HTTP {exc.status_code}: {self._clean(_error_message(exc))}",
                                status=exc.status_code, attempts=int(state[0])) from None
        except openai.APITimeoutError as exc:
            dropped = _dropped_connection(exc)
            if dropped is not None:
                raise RequestFailed(self._clean(f"connection failed: {dropped}"),
                                    attempts=int(state[0])) from None
            raise RequestFailed("request timed out", attempts=int(state[0])) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise RequestFailed(self._clean(f"connection failed: {cause}"),
                                attempts=int(state[0])) from None
        except openai.APIError as exc:
            raise RequestFailed(f"bad response: {self._clean(_error_message(exc))}",
                                attempts=int(state[0])) from None
        except ValueError as exc:
            raise RequestFailed(f"the server sent a malformed response: {exc}",
                                attempts=int(state[0])) from None
        finally:
            _attempt.reset(token)
        latency_ms = (time.monotonic() - state[1]) * 1000.0
        attempts = max(1, int(state[0]))
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise RequestFailed("the response has no choices[0].message", attempts=attempts) from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return ChatResponse(
            text=text if isinstance(text, str) else str(text),
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            model=data.get("model"),
            system_fingerprint=data.get("system_fingerprint"),
            latency_ms=latency_ms,
            attempts=attempts,
        )

    def _raise_fatal(self, exc: Any, request: ChatRequest) -> None:
        """Failures that every row would meet stop the run at once."""
        status = exc.status_code
        message = self._clean(_error_message(exc))
        where = f"endpoint {self.name} ({self.base_url})"
        if status in (401, 403):
            raise ProviderError(f"{where} refused the credentials: HTTP {status}: {message}",
                                fix="check the API key (OPENAI_API_KEY, or the endpoint's "
                                "api_key_env in promptctl.yaml)")
        if status == 404:
            raise InputError(f"{where} does not know model {request.model!r}: {message}",
                             fix="check the model name (--model or model: in the prompt file)")
        if status in (400, 422):
            lowered = message.lower()
            for name in request.params:
                if re.search(rf"\b{re.escape(name.lower())}\b", lowered):
                    raise InputError(f"{where} rejected the parameter {name}="
                                     f"{request.params[name]!r}: {message}",
                                     fix=f"remove or change params.{name} in the prompt file "
                                     "for this endpoint")

    def _clean(self, text: str) -> str:
        """`text` with the API key masked: it must never reach a row, a log or a message."""
        return text.replace(self._secret, "***") if self._secret else text

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()
