"""Endpoint registry: which server a `--model` name goes to, and opening a provider for it.

SDKs and the llama.cpp server are imported lazily so `promptctl --help` stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptctl.config import DEFAULT_CONCURRENCY, LOCAL_CONCURRENCY, Config, Endpoint
from promptctl.errors import InputError
from promptctl.providers.base import ChatRequest, ChatResponse, Provider, RequestFailed

__all__ = ["ChatRequest", "ChatResponse", "Provider", "RequestFailed", "ResolvedModel",
           "open_provider", "resolve_model"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
BUILTIN_LOCAL = "local"
BUILTIN_LOCAL_MODEL = "smollm2"


@dataclass(frozen=True)
class ResolvedModel:
    """A `--model` name resolved to an endpoint. `cache_url` identifies the server in cache keys."""

    spec: str
    model: str
    endpoint: Endpoint | None
    base_url: str | None
    cache_url: str
    api_key_env: str | None

    @property
    def endpoint_name(self) -> str:
        return self.endpoint.name if self.endpoint is not None else "openai"

    @property
    def default_concurrency(self) -> int:
        if self.endpoint is not None and self.endpoint.concurrency:
            return self.endpoint.concurrency
        if self.endpoint is not None and self.endpoint.managed:
            # Two cores: parallel requests to a local CPU model are slower than serial.
            return LOCAL_CONCURRENCY
        return DEFAULT_CONCURRENCY


def _gguf_identity(path: str) -> str:
    """Cache identity of a model file: replacing the file (new size or mtime) changes it.

    Hashing a multi-gigabyte file on every run would cost seconds.
    """
    try:
        st = os.stat(os.path.expanduser(path))
    except OSError:
        return f"gguf:{path}"
    return f"gguf:{path}:{st.st_size}:{st.st_mtime_ns}"


def resolve_model(spec: str, config: Config) -> ResolvedModel:
    """Resolve `MODEL` (OpenAI) or `ENDPOINT/MODEL` (promptctl.yaml or the built-in `local`)."""
    if not spec or not spec.strip():
        raise InputError("empty model name", fix="pass --model NAME or set model: in the prompt file")
    head, sep, tail = spec.partition("/")
    if sep and head in config.endpoints:
        ep = config.endpoints[head]
        if not tail:
            raise InputError(f"model name missing after {head}/", fix=f"use --model {head}/MODEL")
        if ep.managed:
            return ResolvedModel(spec, tail, ep, None, _gguf_identity(str(ep.gguf)), None)
        return ResolvedModel(spec, tail, ep, ep.base_url, str(ep.base_url).rstrip("/"), ep.api_key_env)
    if sep and head == BUILTIN_LOCAL:
        if tail != BUILTIN_LOCAL_MODEL:
            raise InputError(f"the built-in local endpoint serves only {BUILTIN_LOCAL_MODEL!r}, "
                             f"not {tail!r}", fix=f"use --model local/{BUILTIN_LOCAL_MODEL}, or "
                             "name a GGUF file as an endpoint in promptctl.yaml")
        ep = Endpoint(name=BUILTIN_LOCAL, gguf="builtin:smollm2", ctx=2048)
        return ResolvedModel(spec, tail, ep, None, "gguf:builtin:smollm2", None)
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    if sep and base_url is None:
        known = ", ".join(sorted([*config.endpoints, BUILTIN_LOCAL]))
        raise InputError(f"unknown endpoint {head!r} in model {spec!r}",
                         file=config.path or (config.root / "promptctl.yaml"),
                         fix=f"define endpoints: {{{head}: {{base_url: ...}}}} in promptctl.yaml "
                         f"(known endpoints: {known})")
    return ResolvedModel(spec, spec, None, base_url, (base_url or OPENAI_BASE_URL).rstrip("/"),
                         "OPENAI_API_KEY")


def _api_key(resolved: ResolvedModel) -> str:
    if resolved.endpoint is not None and resolved.endpoint.managed:
        return "none"
    env = resolved.api_key_env
    if env is None:
        # A configured endpoint without api_key_env: local servers usually need none.
        return "none"
    key = os.environ.get(env)
    if key:
        return key
    if resolved.endpoint is None and resolved.base_url is not None:
        return "none"  # OPENAI_BASE_URL names a server of the user's own
    if resolved.endpoint is None:
        raise InputError(
            f"no API key for model {resolved.spec!r}",
            fix="set OPENAI_API_KEY, or name an endpoint in promptctl.yaml and use "
            "--model ENDPOINT/MODEL, or run offline with --model local/smollm2")
    raise InputError(f"no API key for endpoint {resolved.endpoint_name!r}: ${env} is not set",
                     fix=f"export {env}=... (the endpoint's api_key_env in promptctl.yaml)")


def check_credentials(resolved: ResolvedModel) -> None:
    """Fail before any work when a key is missing."""
    _api_key(resolved)


def _model_file(ep: Endpoint, params: dict[str, Any]) -> Path:
    """Check a managed endpoint can serve: extra installed, file valid, params accepted."""
    from promptctl.providers import llamacpp

    llamacpp.require_xllamacpp()
    llamacpp.check_params(params, ep.name)
    path = llamacpp.smollm2_path() if ep.gguf == "builtin:smollm2" else Path(str(ep.gguf))
    llamacpp.check_gguf(path)
    return path


def preflight(resolved: ResolvedModel, params: dict[str, Any]) -> None:
    """Everything that can be known wrong before a run is created: the key, and for a
    managed endpoint the xllamacpp extra, the model file and the request parameters."""
    from promptctl.providers.pool import sender_processes

    check_credentials(resolved)
    if resolved.endpoint is not None and resolved.endpoint.managed:
        _model_file(resolved.endpoint, params)
    else:
        sender_processes(DEFAULT_CONCURRENCY)  # a bad PROMPTCTL_PROCESSES fails here, not mid-run


class _ManagedProvider(Provider):
    """An OpenAI provider in front of a llama.cpp server that lives as long as it does."""

    def __init__(self, server: Any, inner: Provider, model_path: Path, startup_s: float) -> None:
        self.server = server
        self.inner = inner
        self.name = inner.name
        self.base_url = inner.base_url
        self.model_path = model_path
        self.startup_s = startup_s
        self.pid = server.pid  # kept: the server forgets it once stopped

    def describe(self) -> dict[str, Any]:
        return {"server": {"managed": "llama.cpp", "pid": self.pid, "gguf": str(self.model_path),
                           "startup_s": round(self.startup_s, 3)}}

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.server.stop()


def open_provider(resolved: ResolvedModel, concurrency: int, params: dict[str, Any]) -> Provider:
    """Open a provider; for a GGUF endpoint this starts its llama.cpp server (stop with aclose).

    At high concurrency requests are sent from child processes (see `pool`)."""
    from promptctl.providers.pool import sender_processes

    key = _api_key(resolved)
    ep = resolved.endpoint
    if ep is not None and ep.managed:
        import time

        from promptctl.providers import llamacpp

        path = _model_file(ep, params)
        server = llamacpp.LlamaServer(path, ctx=ep.ctx, threads=ep.threads)
        started = time.monotonic()
        base_url = server.start()
        startup_s = time.monotonic() - started
        from promptctl.providers.openai import OpenAIProvider

        try:
            inner = OpenAIProvider(ep.name, base_url, key, concurrency=concurrency)
        except BaseException:
            server.stop()
            raise
        return _ManagedProvider(server, inner, path, startup_s)
    processes = sender_processes(concurrency)
    if processes > 1:
        from promptctl.providers.pool import SenderPool

        return SenderPool(resolved.endpoint_name, resolved.cache_url, key, concurrency=concurrency,
                          processes=processes)
    from promptctl.providers.openai import OpenAIProvider

    return OpenAIProvider(resolved.endpoint_name, resolved.base_url, key, concurrency=concurrency)
