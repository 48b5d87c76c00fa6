"""Every request a run makes goes through here: the cache, --cache-only, rate limits, the
provider (opened on the first cache miss) and the accounting of attempts and cost.

A row may make several requests (the evaluated model, then a judge); each is one call of
`Gateway.complete` on the channel of the model it goes to.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from promptctl.allowance import Allowance, charging
from promptctl.config import Config, Price
from promptctl.errors import ParamRejected, ProviderError
from promptctl.providers import ChatRequest, Provider, RequestFailed, ResolvedModel, resolve_model
from promptctl.providers.tokens import message_tokens
from promptctl.ratelimit import RateLimiter
from promptctl.store import Store
from promptctl.store.keys import cache_key, embedding_key


@dataclass
class Progress:
    """Counters reported to the progress callback after every row."""

    total: int
    done: int = 0
    errors: int = 0
    retries: int = 0
    cached: int = 0
    spent_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    # What the run waits on when no row is moving (a submitted batch's state).
    note: str = ""


ProgressFn = Callable[[Progress], None]


def cost_of(price: Price | None, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """USD for these tokens at `price` (per million), None when the price is unknown."""
    if price is None:
        return None
    return ((prompt_tokens or 0) * price.input + (completion_tokens or 0) * price.output) / 1e6


class LazyProvider:
    """Opens the provider on the first cache miss, so a fully cached run never imports the SDK
    (about 0.8 s) nor starts a local model server."""

    def __init__(self, opener: Callable[[], Provider]) -> None:
        self._opener = opener
        self._provider: Provider | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Provider:
        async with self._lock:
            if self._provider is None:
                provider = self._opener()
                try:
                    await provider.start()
                except BaseException:
                    await provider.aclose()
                    raise
                self._provider = provider
            return self._provider

    @property
    def opened(self) -> Provider | None:
        return self._provider

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()


@dataclass
class Usage:
    """What one channel's requests in this process cost: the evaluated model's, a judge's or
    an embeddings model's, reported apart from each other.

    Two costs, as for the evaluated model: `cost_usd` is what every answer would cost
    uncached (the tokens of cached answers included: the same figure on a first run and
    on a fully cached re-run), `spent_usd` what the requests sent now cost. An unknown price
    leaves a cost unknown (None), never $0, except that sending nothing costs nothing. A
    cached text whose tokens were not kept (an embedding cached before they were) leaves
    `cost_usd` unknown."""

    requests: int = 0
    cached: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0
    spent_usd: float | None = 0.0

    def add(self, price: Price | None, prompt_tokens: int | None,
            completion_tokens: int | None) -> float:
        """Count one answered request; returns its cost (0.0 when the price is unknown)."""
        self.requests += 1
        cost = self._tally(price, prompt_tokens, completion_tokens)
        if cost is None:
            self.spent_usd = None
        elif self.spent_usd is not None:
            self.spent_usd += cost
        return cost or 0.0

    def add_cached(self, price: Price | None, prompt_tokens: int | None,
                   completion_tokens: int | None, *, known: bool = True) -> None:
        """Count one answer (or text) the cache held: nothing is paid, and what it would
        cost counts in `cost_usd`; `known` False when its tokens were not kept."""
        self.cached += 1
        self._tally(price, prompt_tokens, completion_tokens)
        if not known:
            self.cost_usd = None

    def _tally(self, price: Price | None, prompt_tokens: int | None,
               completion_tokens: int | None) -> float | None:
        self.prompt_tokens += prompt_tokens or 0
        self.completion_tokens += completion_tokens or 0
        cost = cost_of(price, prompt_tokens, completion_tokens)
        if cost is None:
            self.cost_usd = None
        elif self.cost_usd is not None:
            self.cost_usd += cost
        return cost

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "cached": self.cached, "errors": self.errors,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8),
                "spent_usd": None if self.spent_usd is None else round(self.spent_usd, 8)}


@dataclass
class Channel:
    """One model on one endpoint as a run uses it."""

    resolved: ResolvedModel
    provider: LazyProvider | None
    price: Price | None
    limiter: RateLimiter | None = None
    max_tokens: int = 256
    usage: Usage = field(default_factory=Usage)
    # Why this run sends one request per sample rather than one with `n` (the endpoint
    # rejected or ignored `n`), once it found out: the rest of the run does not ask again.
    n_refused: str | None = None
    # The model's token counter, loaded the first time a dollar allowance needs it.
    counter: Callable[[str], int] | None = None

    def count(self, text: str) -> int:
        if self.counter is None:
            self.counter = self.resolved.backend.token_counter(self.model)[0]
        return self.counter(text)

    @property
    def model(self) -> str:
        return self.resolved.model


@dataclass(frozen=True)
class Answer:
    """What one request gave: a response (from the server or the cache) or an error."""

    response: dict[str, Any] | None
    error: str | None = None
    attempts: int = 0
    cached: bool = False


# Requests in a row that found the server unreachable (every attempt timed out or could not
# connect) before the run stops: a server that is down would otherwise cost every row its
# full retry cycle.
UNREACHABLE_STREAK = 3


class Gateway:
    """The cache and the providers of one run, shared by every request it makes."""

    def __init__(self, store: Store, *, use_cache: bool, cache_only: bool,
                 progress: Progress, allowance: Allowance | None = None) -> None:
        self.store = store
        self.use_cache = use_cache
        self.cache_only = cache_only
        self.progress = progress
        # Every HTTP attempt of every request sent (retries, judges and embeddings included)
        # is taken from it; an attempt it cannot cover is not sent (see promptctl.allowance).
        self.allowance = allowance
        # Answers to put in the cache, written in the same transaction as their rows.
        self.new_cache: list[tuple[str, dict[str, Any]]] = []
        self._unreachable = 0

    async def complete(self, channel: Channel, messages: list[dict[str, str]],
                       params: dict[str, Any], sample: int, *, key_extra: str | None = None
                       ) -> Answer:
        """The answer to one chat request, from the cache when it has it. `key_extra` is
        part of the cache key and not of the request (a judge prompt's sha256)."""
        key = cache_key(channel.resolved.cache_url, channel.model, messages, params, sample,
                        key_extra)
        # --cache-only reads the cache even for a run started with --no-cache (a resume):
        # the check before the run found every answer there.
        hit = self.store.cache_get(key) if self.use_cache or self.cache_only else None
        if hit is not None:
            self.progress.cached += 1
            channel.usage.add_cached(channel.price, hit.get("prompt_tokens"),
                                     hit.get("completion_tokens"))
            return Answer(hit, cached=True)
        if self.cache_only or channel.provider is None:
            return Answer(None, error="not in the cache (--cache-only sends nothing)")
        worst = self._chat_worst(channel, messages, params)
        refused = self._refused(channel, worst)
        if refused is not None:
            return Answer(None, error=refused)
        client = await channel.provider.get()
        if channel.limiter is not None:
            # chars/4 is the usual estimate; the limit only needs to be conservative. Declared
            # tools go with the request as JSON.
            tools = params.get("tools")
            await channel.limiter.acquire(
                (sum(len(m["content"]) for m in messages)
                 + (len(json.dumps(tools, ensure_ascii=False)) if tools else 0)) // 4
                + channel.max_tokens)
        try:
            with charging(self.allowance, worst or 0.0):
                res = await client.complete(ChatRequest(channel.model, messages, params))
        except RequestFailed as exc:
            self._failed(channel, client, exc)
            return Answer(None, error=str(exc), attempts=exc.attempts)
        response: dict[str, Any] = {
            "text": res.text, "prompt_tokens": res.prompt_tokens,
            "completion_tokens": res.completion_tokens, "model": res.model,
            "system_fingerprint": res.system_fingerprint, "latency_ms": res.latency_ms}
        if res.no_text is not None:
            response["no_text"] = res.no_text
        if res.tool_calls:
            response["tool_calls"] = res.tool_calls
        if res.choices:
            response["choices"] = [{"text": c.text, **({"no_text": c.no_text} if c.no_text else {})}
                                   for c in res.choices]
        self._unreachable = 0
        self.progress.retries += res.attempts - 1
        self.progress.spent_usd += channel.usage.add(channel.price, res.prompt_tokens,
                                                     res.completion_tokens)
        if self.use_cache:
            self.new_cache.append((key, response))
        return Answer(response, attempts=res.attempts)

    def has(self, channel: Channel, messages: list[dict[str, str]], params: dict[str, Any],
            sample: int) -> bool:
        """Whether the answer to this request would come from the cache."""
        if not (self.use_cache or self.cache_only):
            return False
        return self.store.cache_get(cache_key(channel.resolved.cache_url, channel.model, messages,
                                              params, sample)) is not None

    async def complete_samples(self, channel: Channel, messages: list[dict[str, str]],
                               params: dict[str, Any], k: int,
                               slots: asyncio.Semaphore | None = None) -> Samples:
        """`k` answers to one request (self-consistency): one request with `n=k` where the
        endpoint answers it, else `k` requests, sample by sample (each cached under its own
        sample index). An endpoint that rejects `n` (HTTP 400 naming it) or answers fewer
        choices is remembered on the channel: the rest of the run sends `k` requests.

        Separate requests go one after another, so that the row's latency is what it took.
        A replay finds whichever form the first run cached."""

        async def one(p: dict[str, Any], sample: int) -> Answer:
            if slots is None:
                return await self.complete(channel, messages, p, sample)
            async with slots:
                return await self.complete(channel, messages, p, sample)

        with_n = {**params, "n": k}
        if k > 1 and channel.resolved.supports_n and channel.n_refused is None and (
                self.has(channel, messages, with_n, 0)
                or not all(self.has(channel, messages, params, s) for s in range(k))):
            try:
                answer = await one(with_n, 0)
            except ParamRejected as exc:
                if exc.param != "n":
                    raise
                channel.n_refused = f"the endpoint rejected n={k} ({exc.message})"
            else:
                split = _split(answer, k)
                if split is not None:
                    return Samples(split, "n")
                got = len((answer.response or {}).get("choices") or []) or 1
                channel.n_refused = f"the endpoint answered n={k} with {got} choice(s)"
        answers = []
        for sample in range(k):
            answers.append(await one(params, sample))
        return Samples(tuple(answers), "separate", channel.n_refused if k > 1 and
                       channel.resolved.supports_n else None)

    def _chat_worst(self, channel: Channel, messages: list[dict[str, str]],
                    params: dict[str, Any]) -> float | None:
        """The most one attempt of this request may cost, as the estimates count it (prompt
        tokens by the model's counter, every choice as long as max_tokens allows); 0.0 when
        no dollar allowance applies, None when it cannot be bounded."""
        if self.allowance is None or self.allowance.usd is None:
            return 0.0
        max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        if channel.price is None or not max_tokens:
            return None
        tools = params.get("tools")
        prompt_tokens = message_tokens(messages, channel.count) + (
            channel.count(json.dumps(tools, ensure_ascii=False)) if tools else 0)
        choices = int(params.get("n") or 1)
        return cost_of(channel.price, prompt_tokens, choices * int(max_tokens)) or 0.0

    def _embed_worst(self, channel: Channel, texts: list[str]) -> float | None:
        if self.allowance is None or self.allowance.usd is None:
            return 0.0
        if channel.price is None:
            return None
        return cost_of(channel.price, sum(channel.count(t) for t in texts), 0) or 0.0

    def _refused(self, channel: Channel, worst: float | None) -> str | None:
        """Why a request is not sent at all under the allowance (None: it may be)."""
        if self.allowance is None:
            return None
        if worst is None:
            channel.usage.errors += 1
            self.allowance.refuse()
            return (f"budget reached: the cost of a request to {channel.resolved.spec} has no "
                    "bound (its price or params.max_tokens is not known), so it cannot be kept "
                    "within a budget in dollars; not sent")
        if not self.allowance.covers(worst):
            # The HTTP hook would refuse its first attempt: nothing need be opened or waited for.
            channel.usage.errors += 1
            return self.allowance.refuse()
        return None

    def _failed(self, channel: Channel, client: Provider, exc: RequestFailed) -> None:
        """Count a request that failed after every retry; stop the run once the endpoint
        looks down (UNREACHABLE_STREAK such failures in a row)."""
        channel.usage.errors += 1
        self.progress.retries += max(0, exc.attempts - 1)
        self._unreachable = self._unreachable + 1 if exc.unreachable else 0
        if self._unreachable >= UNREACHABLE_STREAK:
            raise ProviderError(
                f"endpoint {client.name} ({client.base_url}) is unreachable: "
                f"{self._unreachable} requests in a row failed after every retry ({exc})",
                fix="check that the server is up and reachable; if it is only slow, raise "
                "timeout: of the endpoint in promptctl.yaml or pass --timeout SECONDS") from None

    def cached_embedding(self, channel: Channel, text: str) -> list[float] | None:
        """The cached embedding of `text` on the channel's model, if the cache has it."""
        if not (self.use_cache or self.cache_only):
            return None
        hit = self.store.cache_get(embedding_key(channel.resolved.cache_url, channel.model, text))
        vector = hit.get("embedding") if isinstance(hit, dict) else None
        if not isinstance(vector, list) or not vector:
            return None
        assert isinstance(hit, dict)
        tokens = hit.get("prompt_tokens")
        known = isinstance(tokens, int) and not isinstance(tokens, bool)
        channel.usage.add_cached(channel.price, tokens if known else None, 0, known=known)
        return [float(v) for v in vector]

    async def embed(self, channel: Channel, texts: list[str]) -> Embedded:
        """Embeddings of `texts` on the channel's model: from the cache when it has them, the
        others in one request (which the cache then keeps, one entry per text)."""
        vectors = [self.cached_embedding(channel, text) for text in texts]
        missing = [i for i, v in enumerate(vectors) if v is None]
        if not missing:
            return Embedded(vectors)
        if self.cache_only or channel.provider is None:
            return Embedded(vectors, error="not in the cache (--cache-only sends nothing)")
        sent = [texts[i] for i in missing]
        worst = self._embed_worst(channel, sent)
        refused = self._refused(channel, worst)
        if refused is not None:
            return Embedded(vectors, error=refused)
        client = await channel.provider.get()
        if channel.limiter is not None:
            await channel.limiter.acquire(sum(len(t) for t in sent) // 4 + 1)
        try:
            with charging(self.allowance, worst or 0.0):
                res = await client.embed(channel.model, sent)
        except RequestFailed as exc:
            self._failed(channel, client, exc)
            return Embedded(vectors, error=str(exc))
        self._unreachable = 0
        self.progress.retries += res.attempts - 1
        self.progress.spent_usd += channel.usage.add(channel.price, res.prompt_tokens, 0)
        # Each text's share of the request's tokens is kept with its vector, so that a re-run
        # that finds it cached still knows what it would cost uncached.
        shares = token_shares(res.prompt_tokens, sent)
        for i, vector, tokens in zip(missing, res.vectors, shares, strict=True):
            vectors[i] = vector
            if self.use_cache:
                entry: dict[str, Any] = {"embedding": vector}
                if tokens is not None:
                    entry["prompt_tokens"] = tokens
                self.new_cache.append((embedding_key(channel.resolved.cache_url, channel.model,
                                                     texts[i]), entry))
        return Embedded(vectors)


@dataclass(frozen=True)
class Samples:
    """The answers to one request sampled `k` times: one per sample (a failed request is an
    error answer for each sample it was to give), and how they were asked: "n" (one request
    answered every sample; tokens and latency are on the first answer only) or "separate".
    `note` says why separate requests were sent where `n` was tried."""

    answers: tuple[Answer, ...]
    requests: str
    note: str | None = None


def _split(answer: Answer, k: int) -> tuple[Answer, ...] | None:
    """The `k` samples of one answer to a request with `n=k`; None when it holds fewer
    choices (the server ignored `n`). The request's tokens and latency go with the first
    sample: they are the cost of all of them."""
    if answer.response is None:
        return (answer,) * k
    choices = answer.response.get("choices")
    if not isinstance(choices, list) or len(choices) < k:
        return None
    out = []
    for i, choice in enumerate(choices[:k]):
        response = {key: value for key, value in answer.response.items()
                    if key not in ("choices", "text", "no_text", "tool_calls")}
        if i:
            response.update(prompt_tokens=0, completion_tokens=0, latency_ms=0.0)
        response["text"] = str(choice.get("text") or "") if isinstance(choice, dict) else ""
        if isinstance(choice, dict) and choice.get("no_text"):
            response["no_text"] = choice["no_text"]
        out.append(Answer(response, attempts=answer.attempts if i == 0 else 0,
                          cached=answer.cached))
    return tuple(out)


def token_shares(total: int | None, texts: list[str]) -> list[int | None]:
    """`total` tokens of one embeddings request split over its texts in proportion to their
    length (whole tokens, summing to `total`); None each when the total is unknown."""
    if total is None:
        return [None] * len(texts)
    weights = [max(1, len(t)) for t in texts]
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    # The tokens rounding left over go to the largest remainders, first text first on a tie.
    order = sorted(range(len(texts)), key=lambda i: (shares[i] - exact[i], i))
    for i in order[:total - sum(shares)]:
        shares[i] += 1
    out: list[int | None] = list(shares)
    return out


@dataclass(frozen=True)
class Embedded:
    """What one embeddings call gave: a vector per text (None where it failed) and why."""

    vectors: list[list[float] | None]
    error: str | None = None


class Services:
    """What scorers may ask of the run's engine: channels to other models (a judge, an
    embeddings model), opened lazily and sharing the run's cache, limits and accounting."""

    def __init__(self, gateway: Gateway, config: Config, concurrency: int,
                 opener: Callable[[ResolvedModel, int], Provider]) -> None:
        self.gateway = gateway
        self.config = config
        self.concurrency = concurrency
        self._opener = opener
        self._channels: dict[str, Channel] = {}

    def channel(self, spec: str, params: dict[str, Any] | None = None) -> Channel:
        """The channel of model `spec` (ENDPOINT/MODEL or an OpenAI model name)."""
        if spec not in self._channels:
            resolved = resolve_model(spec, self.config)
            lazy = None if self.gateway.cache_only else LazyProvider(
                lambda: self._opener(resolved, self.concurrency))
            ep = resolved.endpoint
            limiter = RateLimiter(ep.rpm if ep else None, ep.tpm if ep else None)
            self._channels[spec] = Channel(resolved, lazy, self.config.price(resolved.model, ep),
                                           limiter if limiter.active else None)
        return self._channels[spec]

    def usage(self) -> dict[str, dict[str, Any]]:
        """What each scorer channel cost in this process, by model."""
        return {spec: channel.usage.as_dict() for spec, channel in self._channels.items()}

    async def aclose(self) -> None:
        for channel in self._channels.values():
            if channel.provider is not None:
                await channel.provider.aclose()


async def close_channels(channel: Channel, services: Services) -> None:
    """Close the evaluated model's provider and every scorer channel's, whatever fails."""
    try:
        if channel.provider is not None:
            await channel.provider.aclose()
    finally:
        await services.aclose()


def in_cache(store: Store, resolved: ResolvedModel, messages: list[dict[str, str]],
             params: dict[str, Any], sample: int) -> bool:
    """Whether the answer to this request is already in the cache."""
    return store.cache_get(cache_key(resolved.cache_url, resolved.model, messages, params,
                                     sample)) is not None
