"""Providers: the registry of backends (keyed by an endpoint's `type`), and which endpoint
a `--model` name goes to.

A backend is one module that defines `BACKEND` (a `Backend`) plus one line in `BACKENDS`.
Its module is imported only when an endpoint of that type is used, and its SDK only when
a provider is opened, so `promptctl --help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from promptctl import redact
from promptctl.errors import InputError
from promptctl.providers.base import (
    Backend,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Endpoint,
    Price,
    Provider,
    RequestFailed,
)
from promptctl.providers.endpoints import (
    COMMON_ENDPOINT_KEYS,
    MAX_SETTING,
    MAX_TIMEOUT,
    check_endpoint,
    positive_int,
    price_of,
)
from promptctl.providers.registry import BACKENDS, backend, register

__all__ = ["BACKENDS", "COMMON_ENDPOINT_KEYS", "MAX_SETTING", "MAX_TIMEOUT", "Backend", "ChatRequest",
           "ChatResponse", "EmbeddingResponse", "Endpoint", "Endpoints", "Price", "Provider",
           "RequestFailed", "ResolvedModel", "backend", "check_endpoint", "open_provider",
           "positive_int", "preflight", "price_of", "register", "resolve_model"]


class Endpoints(Protocol):
    """What resolving a model reads of the project's configuration (`config.Config`)."""

    @property
    def root(self) -> Path: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def endpoints(self) -> Mapping[str, Endpoint]: ...

    @property
    def withheld(self) -> frozenset[str]: ...

OPENAI_BASE_URL = "https://api.openai.com/v1"
BUILTIN_LOCAL = "local"
BUILTIN_LOCAL_MODEL = "smollm2"
# Query parameters whose values are credentials (`?api_key=...`, `?sig=...`), not options
# such as Azure's `api-version`.
_SECRET_QUERY = ("key", "token", "secret", "password", "passwd", "sig", "auth", "credential")


@dataclass(frozen=True)
class ServerURL:
    """A server URL taken apart: what may be shown and stored, and the credentials it carried.

    Credentials in a URL (`http://user:KEY@host/v1`, `?api_key=KEY`) are sent the way the
    URL meant them (Basic auth, query parameters) but never stored or shown.
    """

    url: str | None
    shown: str | None
    query: dict[str, str] = field(default_factory=dict)
    basic_auth: tuple[str, str] | None = None

    @classmethod
    def parse(cls, raw: str | None, where: str) -> ServerURL:
        if raw is None:
            return cls(None, None)
        try:
            parts = urlsplit(raw.strip())
            port = parts.port
        except ValueError as exc:
            raise InputError(f"{where}: not a valid URL ({exc})",
                             fix="write it as http(s)://HOST[:PORT]/PATH") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"{where}: not an http(s) URL", fix="write it as http(s)://HOST[:PORT]/v1")
        if parts.fragment:
            raise InputError(f"{where}: a URL fragment (#...) has no meaning here",
                             fix="remove the part from # on")
        basic = None
        if parts.username is not None or parts.password is not None:
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
            redact.register(password, user=user)
            basic = (user, password)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for name, value in query.items():
            if any(s in name.lower() for s in _SECRET_QUERY):
                redact.register(value)
        host = parts.hostname + (f":{port}" if port is not None else "")
        if ":" in parts.hostname:
            host = f"[{parts.hostname}]" + (f":{port}" if port is not None else "")
        path = parts.path.rstrip("/")
        url = urlunsplit((parts.scheme, host, path, "", ""))
        shown_query = urlencode({k: ("***" if any(s in k.lower() for s in _SECRET_QUERY) else v)
                                 for k, v in query.items()}, safe="*", quote_via=quote)
        shown = url + (f"?{shown_query}" if shown_query else "")
        return cls(url, shown, query, basic)


@dataclass(frozen=True)
class ResolvedModel:
    """A `--model` name resolved to an endpoint.

    `cache_url` identifies the server in cache keys and stored runs: it never carries
    credentials. `endpoint` is None for the default endpoint (the OpenAI API, or
    OPENAI_BASE_URL).
    """

    spec: str
    model: str
    endpoint: Endpoint | None
    base_url: str | None
    cache_url: str
    api_key_env: str | None
    type: str = "openai"
    server: ServerURL = field(default_factory=lambda: ServerURL(None, None))
    # --timeout and --max-response-mb: override the endpoint's timeout: and max_response_mb:
    # for this run.
    request_timeout: float | None = None
    request_max_response_mb: float | None = None

    @property
    def endpoint_name(self) -> str:
        return self.endpoint.name if self.endpoint is not None else "openai"

    @property
    def backend(self) -> Backend:
        return backend(self.type)

    @property
    def supports_n(self) -> bool:
        """Whether one request with `n` > 1 answers that many choices here: the backend's
        capability, unless the endpoint says `supports_n: false` (a gateway that ignores `n`)."""
        if not self.backend.multiple_choices:
            return False
        return self.endpoint is None or self.endpoint.setting("supports_n", True) is not False

    @property
    def default_concurrency(self) -> int:
        return self.backend.default_concurrency

    @property
    def timeout(self) -> float | None:
        """Seconds one attempt of a request may take (None: the backend's default)."""
        if self.request_timeout is not None:
            return self.request_timeout
        return self.endpoint.timeout if self.endpoint is not None else None

    @property
    def max_response_mb(self) -> float | None:
        """The largest response read, in MiB once decompressed (None: the backend's default)."""
        if self.request_max_response_mb is not None:
            return self.request_max_response_mb
        return self.endpoint.max_response_mb if self.endpoint is not None else None

    def overridden(self, *, timeout: float | None, max_response_mb: float | None) -> ResolvedModel:
        """This model with the command line's limits in place of the endpoint's (None keeps
        the endpoint's)."""
        return replace(
            self, request_timeout=self.request_timeout if timeout is None else timeout,
            request_max_response_mb=self.request_max_response_mb if max_response_mb is None
            else max_response_mb)


    def missing_key(self) -> str | None:
        """The environment variable this model's API key is read from, when a key is needed
        and the variable is not set; else None."""
        env = self.api_key_env
        if env is None or os.environ.get(env):
            return None  # set, or none asked for (a local server's endpoint needs none)
        if self.endpoint is None and self.base_url is not None:
            return None  # OPENAI_BASE_URL names a server of the user's own
        return env

    def api_key(self) -> str:
        """The key to send: from the endpoint's api_key_env (OPENAI_API_KEY by default).

        A key is registered as a secret the moment it is read, so no output shows it.
        """
        env = self.missing_key()
        if env is None:
            key = os.environ.get(self.api_key_env or "")
            if key:
                redact.register(key)
                return key
            return "none"
        if self.endpoint is None:
            raise InputError(
                f"no API key for model {self.spec!r}",
                fix="set OPENAI_API_KEY, or name an endpoint in promptctl.yaml and use "
                "--model ENDPOINT/MODEL, or run offline with --model local/smollm2")
        raise InputError(f"no API key for endpoint {self.endpoint_name!r}: ${env} is not set",
                         fix=f"export {env}=... (the endpoint's api_key_env in promptctl.yaml)")


def resolve_model(spec: str, config: Endpoints) -> ResolvedModel:
    """Resolve `MODEL` (OpenAI) or `ENDPOINT/MODEL` (promptctl.yaml or the built-in `local`)."""
    if not spec or not spec.strip():
        raise InputError("empty model name", fix="pass --model NAME or set model: in the prompt file")
    head, sep, tail = spec.partition("/")
    if sep and head in config.withheld:
        raise InputError(f"endpoint {head!r} of model {spec!r} is defined only by this "
                         "change's promptctl.yaml, which promptctl check does not use: the base "
                         "commit's decides where requests and API keys go",
                         file=config.path or (config.root / "promptctl.yaml"),
                         fix="merge the endpoint to the base branch first, or, if you trust "
                         "this change, pass --trust-pr-config")
    if sep and head in config.endpoints:
        ep = config.endpoints[head]
        if not tail:
            raise InputError(f"model name missing after {head}/", fix=f"use --model {head}/MODEL")
        return _on_endpoint(spec, tail, ep, config)
    if sep and head == BUILTIN_LOCAL:
        if tail != BUILTIN_LOCAL_MODEL:
            raise InputError(f"the built-in local endpoint serves only {BUILTIN_LOCAL_MODEL!r}, "
                             f"not {tail!r}", fix=f"use --model local/{BUILTIN_LOCAL_MODEL}, or "
                             "name a GGUF file as an endpoint in promptctl.yaml")
        # One slot and no prompt cache: bench/local.py found either changes SmolLM2's answers.
        # Embeddings too (mean-pooled): `similarity: {model: local/smollm2}` works offline.
        # llama.cpp answers chat requests alike with or without them.
        ep = Endpoint(name=BUILTIN_LOCAL, type="llamacpp",
                      settings={"gguf": "builtin:smollm2", "ctx": 2048, "embeddings": True})
        return _on_endpoint(spec, tail, ep, config)
    env_url = os.environ.get("OPENAI_BASE_URL") or None
    if sep and env_url is None:
        known = ", ".join(sorted([*config.endpoints, BUILTIN_LOCAL]))
        raise InputError(f"unknown endpoint {head!r} in model {spec!r}",
                         file=config.path or (config.root / "promptctl.yaml"),
                         fix=f"define endpoints: {{{head}: {{base_url: ...}}}} in promptctl.yaml "
                         f"(known endpoints: {known})")
    server = ServerURL.parse(env_url, "OPENAI_BASE_URL")
    return ResolvedModel(spec, spec, None, server.url, server.shown or OPENAI_BASE_URL,
                         "OPENAI_API_KEY", "openai", server)


def _on_endpoint(spec: str, model: str, ep: Endpoint, config: Endpoints) -> ResolvedModel:
    chosen = backend(ep.type)
    server = ServerURL.parse(ep.base_url, f"base_url of endpoint {ep.name!r}")
    partial = ResolvedModel(spec, model, ep, server.url, server.shown or "", ep.api_key_env,
                            ep.type, server)
    identity = chosen.identity(partial) if chosen.identity is not None else (server.shown or ep.name)
    return ResolvedModel(spec, model, ep, server.url, identity, ep.api_key_env, ep.type, server)


def preflight(resolved: ResolvedModel, params: dict[str, Any]) -> None:
    """Everything that can be known wrong before a run is created (the key, a model file,
    request parameters the backend refuses)."""
    resolved.backend.preflight(resolved, params)


def open_provider(resolved: ResolvedModel, concurrency: int, params: dict[str, Any]) -> Provider:
    """Open a provider for `resolved` (a managed backend starts its server; stop it with
    aclose)."""
    return resolved.backend.open(resolved, concurrency, params)
