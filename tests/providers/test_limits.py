"""The HTTP client's limits: the size of a response once decompressed (`max_response_mb`,
`--max-response-mb`) and a wall-clock deadline for each attempt (`timeout`, `--timeout`).

Whatever the server sends (a gzip bomb, a huge plain completion, a body dripped a byte at a
time) ends as a row error naming the limit and how to raise it, with memory bounded by the
cap: never a crash, never a hang. Both of the SDK's transports are held to them: httpx2's
own, and aiohttp, which the provider uses from AIOHTTP_FROM connections.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from promptctl.providers import ChatRequest, ChatResponse, RequestFailed
from promptctl.providers.openai import OpenAIProvider
from tests.fakeserver import FakeOpenAI, large_completion, last_user_message
from tests.helpers import ECHO_WORDS, eval_json, invoke, show_rows, use_fake_openai

KEY = "sk-test-limits-3b9e1f7a2c4d"
MIB = 1 << 20
# A drip that would outlast any test: only a deadline ends it in time.
LONG_DRIP_S = 60.0

transports = pytest.mark.parametrize("aiohttp", [False, True], ids=["httpx2", "aiohttp"])


def complete(server: FakeOpenAI, *, aiohttp: bool = False, **settings: Any) -> ChatResponse:
    """One chat request through a provider of its own (`settings`: timeout, max_retries,
    max_response_mb)."""
    async def go() -> ChatResponse:
        provider = OpenAIProvider("fake", server.base_url, KEY, concurrency=2, aiohttp=aiohttp,
                                  **settings)
        try:
            return await provider.complete(
                ChatRequest("gpt-4o-mini", [{"role": "user", "content": "Question one"}], {}))
        finally:
            await provider.aclose()

    return asyncio.run(go())


def fill_of(size: int) -> int:
    """The length of the content of the fake's completion of `size` bytes."""
    return large_completion(size, "gpt-4o-mini")[1]


# --- the size of a response ----------------------------------------------------------------


@transports
def test_a_gzip_bomb_ends_at_the_cap_without_inflating_in_memory(server: FakeOpenAI,
                                                                 aiohttp: bool) -> None:
    complete(server, aiohttp=aiohttp)  # the SDK loaded before memory is measured
    server.large_next(size=256 * MIB, gzip=True)  # about 270 KB on the wire
    tracemalloc.start()
    try:
        with pytest.raises(RequestFailed) as info:
            complete(server, aiohttp=aiohttp, max_response_mb=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "the response was larger than 1 MiB once decompressed" in message
    assert "--max-response-mb" in message and "max_response_mb:" in message
    # Not retried: the same server would send the same bomb.
    assert info.value.attempts == 1 and len(server.chat_requests) == 2
    assert not info.value.unreachable
    assert peak < 32 * MIB, f"peak {peak / MIB:.0f} MiB reading a bomb of 256 MiB"


@transports
@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
def test_a_huge_plain_completion_is_refused(server: FakeOpenAI, aiohttp: bool,
                                            declare_length: bool) -> None:
    server.large_next(size=64 * MIB, declare_length=declare_length)
    with pytest.raises(RequestFailed, match="larger than 1 MiB once decompressed") as info:
        complete(server, aiohttp=aiohttp, max_response_mb=1)
    assert info.value.attempts == 1 and len(server.chat_requests) == 1


@pytest.mark.parametrize(("gzip", "declare_length"), [(True, True), (False, True), (False, False)],
                         ids=["gzip", "plain", "chunked"])
def test_a_response_of_exactly_the_cap_is_read_and_a_byte_more_is_not(
        server: FakeOpenAI, gzip: bool, declare_length: bool) -> None:
    server.large_next(size=MIB, gzip=gzip, declare_length=declare_length)
    response = complete(server, max_response_mb=1)
    assert response.text == "a" * fill_of(MIB)
    server.large_next(size=MIB + 1, gzip=gzip, declare_length=declare_length)
    with pytest.raises(RequestFailed, match="larger than 1 MiB"):
        complete(server, max_response_mb=1)


def test_the_default_cap_is_16_mib(server: FakeOpenAI) -> None:
    server.large_next(size=16 * MIB, gzip=True)
    assert len(complete(server).text) == fill_of(16 * MIB)
    server.large_next(size=16 * MIB + 1, gzip=True)
    with pytest.raises(RequestFailed, match="larger than 16 MiB once decompressed"):
        complete(server)


def test_error_bodies_are_capped_too(server: FakeOpenAI) -> None:
    server.fail_next(1, status=500, body="x" * (2 * MIB))
    with pytest.raises(RequestFailed, match="larger than 1 MiB") as info:
        complete(server, max_response_mb=1)
    assert info.value.attempts == 1


# --- the deadline of an attempt ------------------------------------------------------------


@transports
def test_a_drip_is_ended_by_the_deadline_of_each_attempt(server: FakeOpenAI, aiohttp: bool) -> None:
    # A byte every 0.5 s: no single read waits as long as the 1.5 s timeout.
    server.drip_next(2, interval=0.5, seconds=LONG_DRIP_S)
    started = time.monotonic()
    with pytest.raises(RequestFailed) as info:
        complete(server, aiohttp=aiohttp, timeout=1.5, max_retries=1)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert "no complete response within 1.5 s, the deadline of each attempt" in message
    assert "--timeout SECONDS" in message and "timeout: of the endpoint" in message
    # Retried like any timeout, and marked so for the run's "server down" streak.
    assert info.value.attempts == 2 and info.value.unreachable
    assert len(server.chat_requests) == 2
    assert elapsed < 20, f"two drips of {LONG_DRIP_S:g} s took {elapsed:.0f} s to be stopped"


@transports
def test_a_drip_that_ends_within_the_deadline_is_answered(server: FakeOpenAI, aiohttp: bool) -> None:
    server.drip_next(interval=0.2, seconds=1.0)
    response = complete(server, aiohttp=aiohttp, timeout=10, max_retries=0)
    assert response.text == "echo: Question one"
    assert response.attempts == 1


def test_a_retry_after_a_drip_can_succeed(server: FakeOpenAI) -> None:
    server.drip_next(interval=0.5, seconds=LONG_DRIP_S)
    response = complete(server, timeout=1.0, max_retries=1)
    assert response.text == "echo: Question one"
    assert response.attempts == 2


# --- through the command line and promptctl.yaml -------------------------------------------


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, project: Path) -> FakeOpenAI:
    return use_fake_openai(monkeypatch, fake_openai, KEY)


def only_row(run: dict[str, Any]) -> dict[str, Any]:
    (row,) = [r for r in show_rows(run["id"]) if r["kind"] == "eval"]
    return row


def test_a_gzip_bomb_is_an_error_row_and_exit_3(api: FakeOpenAI) -> None:
    api.large_next(size=64 * MIB, gzip=True)
    run, result = eval_json("prompts/echo.yaml", "--limit", "1", "--max-response-mb", "1", code=3)
    assert run["errors"] == 1
    row = only_row(run)
    assert row["completion"] is None and row["attempts"] == 1
    assert "the response was larger than 1 MiB once decompressed" in row["error"]
    assert "--max-response-mb" in row["error"]
    assert "1 request(s) failed after every retry" in result.stderr


def test_a_drip_is_an_error_row_naming_the_deadline(api: FakeOpenAI, project: Path) -> None:
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  slow: {{base_url: '{api.base_url}', max_retries: 1}}\n", encoding="utf-8")
    api.drip_next(2, interval=0.5, seconds=LONG_DRIP_S)
    started = time.monotonic()
    run, _ = eval_json("prompts/echo.yaml", "--model", "slow/gpt-4o-mini", "--limit", "1",
                       "--timeout", "1", code=3)
    assert time.monotonic() - started < 20
    row = only_row(run)
    assert row["attempts"] == 2
    assert "no complete response within 1 s, the deadline of each attempt" in row["error"]
    assert "--timeout SECONDS" in row["error"]


@pytest.mark.parametrize(("option", "answered"), [((), False), (("--max-response-mb", "2"), True)],
                         ids=["endpoint", "command-line"])
def test_max_response_mb_of_the_endpoint_applies_and_the_option_overrides_it(
        api: FakeOpenAI, project: Path, option: tuple[str, ...], answered: bool) -> None:
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  gw: {{base_url: '{api.base_url}', max_response_mb: 0.5}}\n",
        encoding="utf-8")
    api.large_next(size=MIB, gzip=True)
    run, _ = eval_json("prompts/echo.yaml", "--model", "gw/gpt-4o-mini", "--limit", "1", *option,
                       code=0 if answered else 3)
    row = only_row(run)
    if answered:
        assert row["error"] is None and row["completion"] == "a" * fill_of(MIB)
    else:
        assert "larger than 0.5 MiB once decompressed" in row["error"]


def test_a_resume_takes_the_cap_of_its_command_line(api: FakeOpenAI) -> None:
    api.large_next(size=2 * MIB, gzip=True)
    first, _ = eval_json("prompts/echo.yaml", "--limit", "1", "--max-response-mb", "1", code=3)
    assert "larger than 1 MiB" in only_row(first)["error"]
    api.large_next(size=2 * MIB, gzip=True)
    resumed, _ = eval_json("--resume", first["id"], "--max-response-mb", "4")
    assert resumed["errors"] == 0
    assert only_row(resumed)["completion"] == "a" * fill_of(2 * MIB)


@pytest.mark.parametrize("value", ["0", "-1", "true", "'16'", "2048"])
def test_a_bad_max_response_mb_in_promptctl_yaml_names_the_key_and_line(
        api: FakeOpenAI, project: Path, value: str) -> None:
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  gw:\n    base_url: '{api.base_url}'\n    max_response_mb: {value}\n",
        encoding="utf-8")
    result = invoke("eval", "prompts/echo.yaml", "--model", "gw/gpt-4o-mini", code=2)
    assert "max_response_mb must be a number of MiB above 0 and at most 1024" in result.stderr
    assert "promptctl.yaml:4" in result.stderr
    assert api.chat_requests == []


@pytest.mark.parametrize("value", ["0", "1025", "lots"])
def test_a_bad_max_response_mb_on_the_command_line_is_a_usage_error(api: FakeOpenAI,
                                                                   value: str) -> None:
    result = invoke("eval", "prompts/echo.yaml", "--max-response-mb", value, code=2)
    assert "--max-response-mb" in result.stderr
    assert api.chat_requests == []


@pytest.mark.usefixtures("quick_polls")
def test_batch_result_files_larger_than_the_cap_are_still_read(api: FakeOpenAI) -> None:
    # Result files are streamed a line at a time, never held whole: the cap is for responses
    # read whole (here every batch document, each well under 100 KiB).
    api.responder = lambda body: f"echo: {last_user_message(body)} {'x' * 60_000}"
    run, _ = eval_json("prompts/echo.yaml", "--batch", "--max-response-mb", "0.1")
    assert run["errors"] == 0
    rows = show_rows(run["id"])
    assert [r["answer"] for r in rows] == ECHO_WORDS
    outputs = [f for f in api.files.values() if f["purpose"] == "batch_output"]
    assert sum(len(f["content"]) for f in outputs) > 2 * int(0.1 * MIB)
