"""The `llamacpp` backend: server slots, prompt caching and requests in flight.

None of these start the model; tests/test_local_e2e.py runs the real one.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from promptctl.config import Endpoint
from promptctl.providers import ChatRequest, resolve_model
from promptctl.providers._llama_child import _parse_args, server_params
from promptctl.providers.local import MAX_SLOTS, ManagedProvider, server_for, slots_for
from promptctl.providers.openai import OpenAIProvider
from tests.fakeserver import FakeOpenAI

HAVE_XLLAMACPP = importlib.util.find_spec("xllamacpp") is not None


def endpoint(**settings: Any) -> Endpoint:
    return Endpoint(name="m", type="llamacpp", settings={"gguf": "/models/m.gguf", **settings})


@pytest.mark.parametrize(("settings", "concurrency", "slots"), [
    ({}, 1, 1),
    ({}, 4, 1),  # one slot unless the endpoint opts in
    ({"parallel": False}, 8, 1),
    ({"parallel": True}, 1, 1),
    ({"parallel": True}, 4, 4),
    ({"parallel": True}, 500, MAX_SLOTS),
])
def test_slots_follow_concurrency_only_when_parallel(settings: dict[str, Any], concurrency: int,
                                                     slots: int) -> None:
    assert slots_for(endpoint(**settings), concurrency) == slots


def _child_args(settings: dict[str, Any], concurrency: int) -> Any:
    server = server_for(endpoint(ctx=1000, **settings), Path("/models/m.gguf"), concurrency)
    argv = server._child_argv(4242)
    assert argv[1:3] == ["-m", "promptctl.providers._llama_child"]
    return _parse_args(argv[3:])


def test_default_server_has_one_slot_and_no_prompt_cache() -> None:
    args = _child_args({}, concurrency=4)
    assert (args.parallel, args.ctx, args.cache_prompt) == (1, 1000, False)


def test_parallel_server_has_a_slot_per_request_each_with_the_endpoints_ctx() -> None:
    args = _child_args({"parallel": True, "cache_prompt": True}, concurrency=3)
    assert (args.parallel, args.ctx, args.cache_prompt) == (3, 3000, True)


@pytest.mark.skipif(not HAVE_XLLAMACPP, reason="needs xllamacpp")
@pytest.mark.parametrize(("settings", "expected"), [
    # n_parallel, n_ctx, cache_prompt, cache_ram_mib (0: llama.cpp's host prompt cache off)
    ({}, (1, 1000, False, 0)),
    ({"parallel": True}, (2, 2000, False, 0)),
    ({"cache_prompt": True}, (1, 1000, True, 8192)),
])
def test_llama_cpp_gets_the_chosen_slots_and_caching(settings: dict[str, Any],
                                                      expected: tuple[Any, ...]) -> None:
    import xllamacpp

    params = server_params(_child_args(settings, concurrency=2), xllamacpp)
    assert (params.n_parallel, params.n_ctx, params.cache_prompt, params.cache_ram_mib) == expected
    assert params.cont_batching  # what makes slots decode together; harmless with one slot


class _Stopped:
    """Stands in for LlamaServer: ManagedProvider only reads `pid` and calls `stop()`."""

    pid = 1
    cache_prompt = False

    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1


@pytest.mark.parametrize(("slots", "concurrency"), [(1, 6), (3, 6)])
def test_at_most_one_request_per_slot_in_flight(server: FakeOpenAI, slots: int,
                                                concurrency: int) -> None:
    server.latency = 0.05
    llama = _Stopped()

    async def go() -> list[str]:
        inner = OpenAIProvider("m", server.base_url, "none", concurrency=concurrency)
        provider = ManagedProvider(llama, inner, Path("/models/m.gguf"), 0.0, slots)
        try:
            answers = await asyncio.gather(*(
                provider.complete(ChatRequest("m", [{"role": "user", "content": f"row {i}"}]))
                for i in range(concurrency)))
        finally:
            await provider.aclose()
        return [a.text for a in answers]

    answers = asyncio.run(go())
    assert len(answers) == concurrency
    assert server.max_in_flight == slots
    assert llama.stops == 1


def test_run_records_slots_and_caching(server: FakeOpenAI) -> None:
    inner = OpenAIProvider("m", server.base_url, "none", concurrency=2)
    provider = ManagedProvider(_Stopped(), inner, Path("/models/m.gguf"), 1.23456, 2)
    try:
        described = provider.describe()["server"]
    finally:
        asyncio.run(provider.aclose())
    assert described["slots"] == 2 and described["cache_prompt"] is False
    assert described["startup_s"] == 1.235


def test_batched_or_cached_answers_are_cached_apart(tmp_path: Path) -> None:
    from promptctl.config import load_config

    (tmp_path / "promptctl.yaml").write_text(
        "endpoints:\n"
        "  plain: {gguf: m.gguf}\n"
        "  slots: {gguf: m.gguf, parallel: true}\n"
        "  both: {gguf: m.gguf, parallel: true, cache_prompt: true}\n"
        "  off: {gguf: m.gguf, parallel: false}\n", encoding="utf-8")
    config = load_config(tmp_path)
    ids = {name: resolve_model(f"{name}/m", config).cache_url
           for name in ("plain", "slots", "both", "off")}
    model = tmp_path / "m.gguf"
    assert ids["plain"] == f"gguf:{model}" == ids["off"]
    assert ids["slots"] == f"gguf:{model};parallel"
    assert ids["both"] == f"gguf:{model};parallel;cache_prompt"


def test_builtin_model_has_one_slot_and_no_prompt_cache(tmp_path: Path) -> None:
    from promptctl.config import load_config

    resolved = resolve_model("local/smollm2", load_config(tmp_path))
    assert resolved.endpoint is not None
    assert slots_for(resolved.endpoint, 4) == 1  # batched slots changed answers
    assert not resolved.endpoint.setting("cache_prompt")  # so did the prompt cache
    assert resolved.cache_url == "gguf:builtin:smollm2"
