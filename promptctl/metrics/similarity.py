"""The `similarity` metric kind: cosine similarity of the embeddings of a row's answer and of
its expected value.

```yaml
metrics:
  - name: close
    similarity:
      model: text-embedding-3-small   # or ENDPOINT/MODEL: POST /embeddings of that endpoint
```
Embeddings go through the run's gateway (cache, --cache-only, rate limits, accounting on the
model's own channel). Rows scored at about the same time share requests: a `Batcher` gathers
their texts for a few milliseconds (or until it holds `MAX_TEXTS`) and sends them as one
request. A row whose embeddings cannot be had gets no score (kept with the row, counted and
shown), never a zero.
"""

from __future__ import annotations

import asyncio
import json
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl.errors import InputError, PromptctlError, display_path
from promptctl.metrics.custom import RESERVED_KEYS, mean_of
from promptctl.metrics.judge import require_model
from promptctl.metrics.registry import (
    PAIRED_MEAN,
    Kind,
    Metric,
    ScoreContext,
    ScorerGateway,
    Scores,
    Services,
    register_kind,
)
from promptctl.project import project_config as load_config
from promptctl.providers import resolve_model
from promptctl.scoring import answer_text
from promptctl.store.keys import embedding_key

if TYPE_CHECKING:
    from promptctl.config import Config

# Texts per embeddings request (OpenAI accepts 2048; local servers are happier with fewer).
MAX_TEXTS = 64
# Vectors a batcher keeps for texts asked again (a list of 1,536 floats is about 50 kB).
MAX_RECENT = 256
# How long the first text of a batch waits for others: rows answered within this window share
# a request.
BATCH_WINDOW_S = 0.01


class EmbeddingFailed(Exception):
    """No vector for a text: the request failed or the cache lacks it under --cache-only."""


class Batcher:
    """Gathers the texts of concurrently scored rows into few embeddings requests.

    A text is sent once however many rows ask for it at about the same time, and the last
    `MAX_RECENT` vectors are kept: rows often share an expected value, and the cache only
    holds a vector once its row is written.
    """

    def __init__(self, gateway: ScorerGateway, channel: Any, *, max_texts: int = MAX_TEXTS,
                 window_s: float = BATCH_WINDOW_S) -> None:
        self.gateway = gateway
        self.channel = channel
        self.max_texts = max_texts
        self.window_s = window_s
        # Every text waiting or in flight, with the future its rows wait on.
        self._futures: dict[str, asyncio.Future[list[float]]] = {}
        self._pending: list[str] = []  # not sent yet
        self._recent: OrderedDict[str, list[float]] = OrderedDict()
        self._timer: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def vector(self, text: str) -> list[float]:
        """The embedding of `text`; EmbeddingFailed says why there is none.

        A text asked again while its vector is recent or its request in flight costs no
        request of its own: it counts as cached (with no tokens: it would cost nothing
        uncached either, the first ask pays or counts for it)."""
        recent = self._recent.get(text)
        if recent is not None:
            self._recent.move_to_end(text)
            self.channel.usage.cached += 1
            return recent
        future = self._futures.get(text)
        if future is not None:  # another row's request carries this text
            # Shielded: a row that is cancelled must not cancel the others' request.
            shared = await asyncio.shield(future)
            self.channel.usage.cached += 1
            return shared
        cached = self.gateway.cached_embedding(self.channel, text)
        if cached is not None:
            self._remember(text, cached)
            return cached
        future = asyncio.get_running_loop().create_future()
        self._futures[text] = future
        self._pending.append(text)
        if len(self._pending) >= self.max_texts:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._after_window())
        return await asyncio.shield(future)

    async def _after_window(self) -> None:
        await asyncio.sleep(self.window_s)
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.create_task(self._send(batch))
            # Kept until done: the loop holds only weak references to tasks.
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, texts: list[str]) -> None:
        try:
            result = await self.gateway.embed(self.channel, texts)
        except BaseException as exc:
            # A failure of every request (a refused key, an endpoint without embeddings)
            # reaches each waiting row, and through it the run.
            for text in texts:
                future = self._futures.pop(text)
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception)
                                         else EmbeddingFailed("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for text, vector in zip(texts, result.vectors, strict=True):
            future = self._futures.pop(text)
            if vector is None:
                future.set_exception(EmbeddingFailed(result.error or "no vector returned"))
                continue
            future.set_result(vector)
            self._remember(text, vector)

    def _remember(self, text: str, vector: list[float]) -> None:
        self._recent[text] = vector
        if len(self._recent) > MAX_RECENT:
            self._recent.popitem(last=False)


# One batcher per embeddings model of a run (its Services).
_batchers: weakref.WeakKeyDictionary[Services, dict[str, Batcher]] = weakref.WeakKeyDictionary()


def batcher(services: Services, model: str) -> Batcher:
    per_run = _batchers.setdefault(services, {})
    if model not in per_run:
        per_run[model] = Batcher(services.gateway, services.channel(model))
    return per_run[model]


def as_text(value: Any) -> str:
    """An expected value as the text that is embedded: strings as they are, other values as
    JSON (numbers as written, lists and mappings in a stable order)."""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def cosine(a: list[float], b: list[float]) -> float | None:
    """Cosine similarity, None when it is undefined (a zero vector, different lengths)."""
    if len(a) != len(b) or not a:
        return None
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    return max(-1.0, min(1.0, dot / norm))


def undefined(answer: list[float], expected: list[float]) -> str:
    """Why the cosine of the answer's and the expected value's vectors is undefined: the
    reason that holds, never a list of possible ones."""
    if len(answer) != len(expected):
        return f"vectors of different lengths ({len(answer)} and {len(expected)})"
    if not answer:
        return "empty vectors"
    for what, vector in (("answer", answer), ("expected value", expected)):
        if not all(math.isfinite(x) for x in vector):
            return f"the {what}'s vector holds a value that is not a finite number"
    for what, vector in (("answer", answer), ("expected value", expected)):
        if not any(vector):
            return f"the {what}'s vector is all zeros"
    return f"the vectors' norms overflow ({len(answer)} dimensions)"


def _failed(ctx: ScoreContext, name: str, message: str) -> Scores:
    ctx.details[name] = {"score": None, "error": message}
    return {}


class Similarity:
    """One configured similarity metric."""

    def __init__(self, name: str, model: str, path: Path, line: int | None) -> None:
        self.name = name
        self.model = model
        self.path = path
        self.line = line
        self.identity: dict[str, Any] = {"similarity": {"model": model}}

    def check(self) -> None:
        """The model resolves to an endpoint (checked by validate and before a run)."""
        try:
            resolved = resolve_model(self.model, load_config())
            resolved.backend  # noqa: B018 - an unknown endpoint type fails here
        except PromptctlError as exc:
            raise InputError(f"metric {self.name}: the embeddings model {self.model!r} does not "
                             f"resolve: {exc.message}", file=self.path, line=self.line,
                             fix=exc.fix or "name an OpenAI embeddings model or ENDPOINT/MODEL"
                             ) from None
        self.identity["similarity"]["server"] = resolved.cache_url

    def preflight(self, config: Config) -> None:
        """The embeddings model can be used now: checked before a run sends anything."""
        require_model(self.model, config, {}, metric=self.name, what="embeddings",
                      file=self.path, line=self.line,
                      elsewhere=f"give similarity: a model on another endpoint (model: "
                      f"ENDPOINT/MODEL in {display_path(self.path)})")

    async def row(self, ctx: ScoreContext) -> Scores:
        row = ctx.row
        if not row.has_expected or not ctx.extraction.valid:
            return {}  # nothing to compare: like exact_match, a readable answer is needed
        answer = answer_text(ctx.extraction).strip()
        expected = as_text(row.expected)
        if not answer or not expected:
            return _failed(ctx, self.name, "empty " + ("answer" if not answer else "expected value")
                           + ": nothing to embed")
        if ctx.services is None:
            return _failed(ctx, self.name, "no engine to send embeddings requests through")
        embedder = batcher(ctx.services, self.model)
        got = await asyncio.gather(embedder.vector(answer), embedder.vector(expected),
                                   return_exceptions=True)
        for item in got:
            if isinstance(item, PromptctlError):
                raise item
            if isinstance(item, BaseException):
                return _failed(ctx, self.name, f"embeddings: {item}")
        a, e = got
        assert isinstance(a, list) and isinstance(e, list)
        value = cosine(a, e)
        if value is None:
            return _failed(ctx, self.name, f"cosine undefined: {undefined(a, e)}")
        return {self.name: value}


def build(name: str, raw: Any, path: Path, line_of: Callable[..., int | None]) -> Metric:
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str) \
            or not raw["model"].strip() or set(raw) - {"model"}:
        raise InputError(f"metric {name}: similarity must be a mapping with model: only",
                         file=path, line=line_of(),
                         fix="e.g. similarity: {model: text-embedding-3-small}, or "
                         "{model: ENDPOINT/MODEL} for an endpoint of promptctl.yaml")
    if name in RESERVED_KEYS:
        raise InputError(f"metric name {name!r} is a key the built-in metrics keep", file=path,
                         line=line_of(), fix="choose another name")
    metric = Similarity(name, raw["model"].strip(), path, line_of("model") or line_of())
    return Metric(name, metric.row, mean_of(name), PAIRED_MEAN, name, needs_expected=True,
                  kind="similarity", identity=metric.identity, check=metric.check,
                  preflight=metric.preflight, value_range=(-1.0, 1.0))  # a cosine


register_kind(Kind("similarity", build, "cosine similarity of embeddings of answer and expected"))


def estimate(prompt: Any, items: Any, *, store: Any, config: Any, use_cache: bool,
             max_tokens: int | None) -> dict[str, Any]:
    """`--dry-run` for the similarity metrics of `prompt` over the planned `items`: answers are
    not known before they are sent, so every scored row counts one answer text (at most
    `max_tokens` tokens), plus the expected texts the cache lacks."""
    out: dict[str, Any] = {}
    for metric in prompt.configured_metrics:
        if metric.kind != "similarity":
            continue
        model = metric.identity["similarity"]["model"]
        resolved = resolve_model(model, config)
        count, _ = resolved.backend.token_counter(resolved.model)
        rows = 0
        expected: set[str] = set()
        for item in items:
            if item.row.has_expected:
                rows += 1
                expected.add(as_text(item.row.expected))
        cached = {t for t in expected if use_cache and store.cache_get(
            embedding_key(resolved.cache_url, resolved.model, t)) is not None}
        texts = rows + len(expected) - len(cached)
        tokens = (sum(count(t) for t in expected - cached) + rows * max_tokens
                  if max_tokens else None)
        price = config.price(resolved.model, resolved.endpoint)
        out[metric.name] = {
            "model": model, "texts_max": texts, "expected_cached": len(cached),
            "requests_min": -(-texts // MAX_TEXTS), "tokens_max": tokens,
            "cost_usd_max": None if price is None or tokens is None
            else round(tokens * price.input / 1e6, 8)}
    return out
