"""The gateway's embeddings: cached per text, counted on the embeddings model's own channel,
sent in batches of at most MAX_TEXTS texts, nothing sent under --cache-only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from promptctl.engine.gateway import Gateway, Progress, Services, token_shares
from promptctl.metrics.similarity import MAX_TEXTS, Batcher, EmbeddingFailed
from promptctl.project import project_config
from promptctl.providers import open_provider
from promptctl.store import Store, open_store
from promptctl.store.keys import embedding_key
from tests.fakeserver import FakeOpenAI, embedding_vector

MODEL = "text-embedding-3-small"  # priced at $0.02 per million tokens


def services(store: Store, *, cache_only: bool = False) -> Services:
    gateway = Gateway(store, use_cache=True, cache_only=cache_only, progress=Progress(total=0))
    return Services(gateway, project_config(), 4, lambda r, c: open_provider(r, c, {}))


def vectors(svc: Services, texts: list[str], *later: list[str]
            ) -> list[list[float] | BaseException]:
    """The vectors of `texts`, asked all at once through one batcher; then of each list in
    `later` (results appended), on the same batcher once the first ones are answered."""
    batcher = Batcher(svc.gateway, svc.channel(MODEL))

    async def go() -> list[list[float] | BaseException]:
        out: list[list[float] | BaseException] = []
        try:
            for group in (texts, *later):
                out += await asyncio.gather(*(batcher.vector(t) for t in group),
                                            return_exceptions=True)
            return out
        finally:
            await svc.aclose()

    return asyncio.run(go())


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeOpenAI) -> Store:
    monkeypatch.chdir(tmp_path)
    return open_store(f"sqlite:///{tmp_path / 'cache.db'}")


def test_embeddings_are_batched_counted_and_cached(store: Store, api: FakeOpenAI) -> None:
    texts = [f"text number {i}" for i in range(100)] + ["text number 7"]  # one twice
    svc = services(store)
    got = vectors(svc, texts, ["text number 3"])
    assert got == [embedding_vector(t) for t in [*texts, "text number 3"]]
    got = got[:-1]
    # The 64th different text sends its batch at once; the other 36 go when the window ends,
    # and the text asked twice is sent once.
    assert sorted(len(r.body["input"]) for r in api.embedding_requests) == [100 - MAX_TEXTS,
                                                                             MAX_TEXTS]
    usage = svc.channel(MODEL).usage
    # The test server counts a token per word: three per text. The text asked twice while its
    # request was in flight, and the one asked again once answered, cost no request: cached.
    assert (usage.requests, usage.cached, usage.errors, usage.prompt_tokens) == (2, 2, 0, 300)
    assert usage.cost_usd == usage.spent_usd == pytest.approx(300 * 0.02 / 1e6)
    store.cache_put(svc.gateway.new_cache)  # as the run's writer does with its rows
    # Each cached text keeps its share of its request's tokens.
    kept = [entry["prompt_tokens"] for _, entry in svc.gateway.new_cache]
    assert len(kept) == 100 and sum(kept) == 300

    again = services(store)
    assert vectors(again, texts) == got
    assert len(api.embedding_requests) == 2  # nothing more was sent
    usage = again.channel(MODEL).usage
    # Nothing paid; what the texts would cost uncached is the first run's figure.
    assert (usage.requests, usage.cached, usage.prompt_tokens, usage.spent_usd) == (0, 101, 300, 0.0)
    assert usage.cost_usd == pytest.approx(300 * 0.02 / 1e6)


def test_a_cached_embedding_without_its_tokens_leaves_the_cost_unknown(store: Store,
                                                                        api: FakeOpenAI) -> None:
    svc = services(store)
    url = svc.channel(MODEL).resolved.cache_url
    # As embeddings were cached before their tokens were kept.
    store.cache_put([(embedding_key(url, MODEL, "old text"), {"embedding": [1.0, 0.0]})])
    assert vectors(svc, ["old text"]) == [[1.0, 0.0]]
    usage = svc.channel(MODEL).usage
    assert (usage.requests, usage.cached, usage.spent_usd, usage.cost_usd) == (0, 1, 0.0, None)


def test_token_shares_add_up_to_the_request() -> None:
    assert token_shares(7, ["a", "bb", "cccc"]) == [1, 2, 4]
    assert token_shares(2, ["a", "b", "c"]) == [1, 1, 0]
    assert sum(token_shares(101, [f"text {i}" * i for i in range(1, 30)])) == 101
    assert token_shares(None, ["a", "b"]) == [None, None]


def test_cache_only_sends_nothing_and_failures_are_counted(store: Store, api: FakeOpenAI) -> None:
    got = vectors(services(store, cache_only=True), ["a", "b"])
    assert all(isinstance(g, EmbeddingFailed) and "--cache-only" in str(g) for g in got)
    assert api.embedding_requests == []
    api.fault_endpoints = {"embeddings"}
    api.fail_next(10, status=400)
    svc = services(store)
    got = vectors(svc, ["a", "b"])
    usage = svc.channel(MODEL).usage
    # A 400 is not retried: one request, one error on the channel, no vector for either text.
    assert all(isinstance(g, EmbeddingFailed) and "400" in str(g) for g in got)
    assert len(api.embedding_requests) == 1
    assert (usage.requests, usage.errors, usage.cost_usd, usage.spent_usd) == (0, 1, 0.0, 0.0)
    assert svc.gateway.new_cache == []  # nothing failed is cached
