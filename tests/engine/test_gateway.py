"""The gateway's embeddings: cached per text, counted on the embeddings model's own channel,
sent in batches of at most MAX_TEXTS texts, nothing sent under --cache-only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from promptctl.engine.gateway import Gateway, Progress, Services
from promptctl.metrics.similarity import MAX_TEXTS, Batcher, EmbeddingFailed
from promptctl.project import project_config
from promptctl.providers import open_provider
from promptctl.store import Store, open_store
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
    # The test server counts a token per word: three per text.
    # Asked again once answered, in the same run: kept, not sent again.
    assert (usage.requests, usage.cached, usage.errors, usage.prompt_tokens) == (2, 1, 0, 300)
    assert usage.cost_usd == pytest.approx(300 * 0.02 / 1e6)
    store.cache_put(svc.gateway.new_cache)  # as the run's writer does with its rows

    again = services(store)
    assert vectors(again, texts) == got
    assert len(api.embedding_requests) == 2  # nothing more was sent
    usage = again.channel(MODEL).usage
    assert (usage.requests, usage.cached, usage.cost_usd) == (0, 101, 0.0)


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
    assert (usage.requests, usage.errors, usage.cost_usd) == (0, 1, 0.0)
    assert svc.gateway.new_cache == []  # nothing failed is cached
