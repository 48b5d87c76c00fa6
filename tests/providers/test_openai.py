"""OpenAIProvider through the real openai SDK against the fake server over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from promptctl.config import Config, Endpoint
from promptctl.errors import InputError, ProviderError
from promptctl.providers import ChatRequest, ChatResponse, RequestFailed, open_provider, resolve_model
from promptctl.providers.openai import OpenAIProvider
from tests.fakeserver import FakeOpenAI, error_body

KEY = "sk-test-provider-5e6f7a8b9c0d"
MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is two plus two"}]


def complete(server: FakeOpenAI, params: dict[str, Any] | None = None, *, model: str = "gpt-4o-mini",
             concurrency: int = 8) -> ChatResponse:
    async def go() -> ChatResponse:
        provider = OpenAIProvider("openai", server.base_url, KEY, concurrency=concurrency)
        try:
            return await provider.complete(ChatRequest(model, MESSAGES, params or {"temperature": 0}))
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_completion_with_usage_model_and_fingerprint(server: FakeOpenAI) -> None:
    server.add_rule("two plus two", "Four.")
    server.model_override = "gpt-4o-mini-2024-07-18"
    res = complete(server, {"temperature": 0, "max_tokens": 5, "seed": 3})
    assert res.text == "Four."
    assert res.prompt_tokens == 2 + 5  # the fake server counts words
    assert res.completion_tokens == 1
    assert res.model == "gpt-4o-mini-2024-07-18"
    assert res.system_fingerprint == "fp_fake"
    assert res.attempts == 1
    assert res.latency_ms > 0
    (request,) = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["messages"] == MESSAGES
    assert request.body["temperature"] == 0
    assert request.body["max_tokens"] == 5
    assert request.body["seed"] == 3


def test_unknown_params_go_in_the_body(server: FakeOpenAI) -> None:
    complete(server, {"temperature": 0, "top_k": 40, "repetition_penalty": 1.1,
                      "extra_body": {"min_p": 0.05}})
    body = server.requests[0].body
    assert body["top_k"] == 40
    assert body["repetition_penalty"] == 1.1
    assert body["min_p"] == 0.05
    assert "extra_body" not in body


def test_429_then_success_counts_attempts(server: FakeOpenAI) -> None:
    server.fail_next(2, status=429, retry_after=0.01)
    res = complete(server)
    assert res.text == "echo: What is two plus two"
    assert res.attempts == 3
    assert [r.status for r in server.requests] == [429, 429, 200]


def test_retry_after_is_honoured(server: FakeOpenAI) -> None:
    server.fail_next(1, status=429, retry_after=0.3)
    complete(server)
    first, second = server.requests
    assert second.timestamp - first.timestamp >= 0.29


def test_500_until_retries_run_out_is_a_failed_row(server: FakeOpenAI) -> None:
    server.fail_next(5, status=500, retry_after_ms=1)
    with pytest.raises(RequestFailed) as info:
        complete(server)
    assert info.value.status == 500
    assert info.value.attempts == 5
    assert str(info.value).startswith("HTTP 500: ")
    assert server.count == 5


def test_dropped_connection_is_retried(server: FakeOpenAI) -> None:
    server.drop_next(1)
    res = complete(server)
    assert res.attempts == 2
    assert [r.status for r in server.requests] == [0, 200]


def test_malformed_body_is_a_failed_row(server: FakeOpenAI) -> None:
    server.malformed_next(10)
    with pytest.raises(RequestFailed) as info:
        complete(server)
    assert "malformed" in str(info.value) or "bad response" in str(info.value)


def test_400_not_about_a_param_is_a_failed_row(server: FakeOpenAI) -> None:
    server.fail_next(1, status=400, body=error_body(400, "This model's maximum context length is 8 tokens."))
    with pytest.raises(RequestFailed) as info:
        complete(server, {"temperature": 0, "max_tokens": 5})
    assert info.value.status == 400
    assert "maximum context length" in str(info.value)
    assert server.count == 1  # a 400 is not retried


def test_400_naming_a_param_is_an_input_error(server: FakeOpenAI) -> None:
    server.reject_param("top_k")
    with pytest.raises(InputError) as info:
        complete(server, {"temperature": 0, "top_k": 5})
    assert info.value.exit_code == 2
    assert "top_k" in info.value.message
    assert info.value.fix is not None and "params.top_k" in info.value.fix


def test_401_is_a_provider_error_without_the_key(server: FakeOpenAI) -> None:
    server.fail_next(1, status=401, body=error_body(401, f"Incorrect API key provided: {KEY}"))
    with pytest.raises(ProviderError) as info:
        complete(server)
    assert info.value.exit_code == 3
    assert "401" in str(info.value)
    assert KEY not in str(info.value)
    assert server.count == 1


def test_404_is_an_input_error_naming_the_model(server: FakeOpenAI) -> None:
    server.fail_next(1, status=404)
    with pytest.raises(InputError) as info:
        complete(server, model="gpt-nope")
    assert "gpt-nope" in str(info.value)
    assert info.value.exit_code == 2


def test_concurrent_requests_share_the_client(server: FakeOpenAI) -> None:
    server.latency = 0.1

    async def go() -> list[ChatResponse]:
        provider = OpenAIProvider("openai", server.base_url, KEY, concurrency=4)
        try:
            return await asyncio.gather(*(
                provider.complete(ChatRequest("gpt-4o-mini", [{"role": "user", "content": f"n{i}"}]))
                for i in range(8)))
        finally:
            await provider.aclose()

    results = asyncio.run(go())
    assert [r.text for r in results] == [f"echo: n{i}" for i in range(8)]
    assert all(r.attempts == 1 for r in results)
    assert 1 < server.max_in_flight <= 4  # the connection pool caps requests in flight


def test_resolve_model_uses_openai_base_url_and_endpoints(
        server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    plain = resolve_model("gpt-4o-mini", Config(root=tmp_path))
    assert plain.model == "gpt-4o-mini"
    assert plain.cache_url == server.base_url
    assert plain.endpoint_name == "openai"
    config = Config(root=tmp_path, endpoints={"fake": Endpoint(
        "fake", settings={"base_url": server.base_url + "/", "api_key_env": "FAKE_KEY"})})
    named = resolve_model("fake/qwen", config)
    assert (named.model, named.endpoint_name, named.cache_url) == ("qwen", "fake", server.base_url)
    monkeypatch.setenv("FAKE_KEY", KEY)

    async def go() -> ChatResponse:
        provider = open_provider(named, 2, {})
        try:
            return await provider.complete(ChatRequest(named.model, MESSAGES))
        finally:
            await provider.aclose()

    assert asyncio.run(go()).text == "echo: What is two plus two"
    assert server.requests[0].body["model"] == "qwen"
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
