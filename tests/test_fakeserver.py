"""The fake OpenAI server, exercised through the real ``openai`` SDK over HTTP."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import re
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakeserver import (
    FakeOpenAI,
    embedding_vector,
    gzip_bomb,
    large_completion,
    tool_call_reply,
)

MODEL = "gpt-4o-mini"


def client(server: FakeOpenAI, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=max_retries)


def ask(c: openai.OpenAI, text: str, **params: Any) -> str:
    completion = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **params
    )
    content: str | None = completion.choices[0].message.content
    assert content is not None
    return content


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


# -- answers -----------------------------------------------------------------


def test_round_trip_has_usage_fingerprint_and_echoed_model(server: FakeOpenAI) -> None:
    completion = client(server).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there world"},
        ],
        temperature=0,
        seed=7,
    )

    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.system_fingerprint == "fp_fake"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello there world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3 + 3
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == 10

    (record,) = server.requests
    assert server.count == 1
    assert record.path == "/v1/chat/completions"
    assert record.status == 200
    assert record.body["temperature"] == 0
    assert record.body["seed"] == 7
    assert record["body"]["model"] == MODEL
    assert record.headers["authorization"] == "Bearer test"


def test_model_override_and_fingerprint_are_configurable(server: FakeOpenAI) -> None:
    server.model_override = "gpt-4o-mini-2024-07-18"
    server.fingerprint = "fp_changed"

    completion = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )

    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.system_fingerprint == "fp_changed"


def test_n_gives_identical_choices_and_scales_completion_tokens(server: FakeOpenAI) -> None:
    completion = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "two words"}], n=3
    )

    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"echo: two words"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * 3


def test_rules_match_only_the_last_user_message_first_rule_wins(server: FakeOpenAI) -> None:
    server.rules.append(("France", "Paris"))
    server.rules.append(("capital", "some capital"))
    server.add_rule("Spain", "Madrid")
    c = client(server)

    assert ask(c, "What is the capital of France?") == "Paris"
    assert ask(c, "And the capital of Spain?") == "some capital"
    assert ask(c, "Spain") == "Madrid"
    assert ask(c, "nothing matches") == "echo: nothing matches"

    # Few-shot examples in earlier turns must not trigger a rule.
    completion = c.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Example: France"},
            {"role": "user", "content": "France"},
            {"role": "assistant", "content": "Paris"},
            {"role": "user", "content": "Italy"},
        ],
    )
    assert completion.choices[0].message.content == "echo: Italy"


def test_rules_read_list_content_parts(server: FakeOpenAI) -> None:
    server.rules.append(("needle", "found"))
    completion = client(server).chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "hay "}, {"type": "text", "text": "needle"}],
            }
        ],
    )
    assert completion.choices[0].message.content == "found"


def test_callable_rule_counts_calls_per_rule(server: FakeOpenAI) -> None:
    seen_models: list[str] = []

    def flaky(body: dict[str, Any], call: int) -> str:
        seen_models.append(body["model"])
        return "Score: 3" if call % 2 == 0 else "Score: 7"

    server.rules.append(("row-1", flaky))
    server.rules.append(("row-2", lambda _body, call: f"call {call}"))
    c = client(server)

    assert [ask(c, "row-1") for _ in range(3)] == ["Score: 3", "Score: 7", "Score: 3"]
    assert ask(c, "row-2") == "call 0"
    assert ask(c, "row-1") == "Score: 7"
    assert seen_models == [MODEL] * 4

    server.reset()
    server.rules.append(("row-1", flaky))
    assert ask(c, "row-1") == "Score: 3"


def test_responder_takes_precedence_over_rules(server: FakeOpenAI) -> None:
    server.rules.append(("hello", "from rule"))
    server.responder = lambda body: f"{len(body['messages'])} messages at T={body['temperature']}"

    assert ask(client(server), "hello", temperature=0) == "1 messages at T=0"


def test_broken_responder_gives_500_and_is_kept(server: FakeOpenAI) -> None:
    def broken(body: dict[str, Any]) -> str:
        raise KeyError("missing")

    server.responder = broken

    with pytest.raises(openai.InternalServerError) as caught:
        ask(client(server), "x")

    assert "KeyError" in caught.value.message
    assert len(server.errors) == 1
    assert isinstance(server.errors[0], KeyError)


def test_a_reply_can_call_tools_in_the_api_shape(server: FakeOpenAI) -> None:
    server.add_rule("refund", tool_call_reply(("refund", {"order_id": "A1"}),
                                              ("lookup", "not json"), content="On it."))
    server.add_rule("raw", {"tool_calls": [{"id": "c9", "type": "function",
                                            "function": {"name": "x", "arguments": 7}}]})
    completion = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "refund please"}],
        tools=[{"type": "function", "function": {"name": "refund", "parameters": {}}}])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "On it."
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("refund", '{"order_id": "A1"}'), ("lookup", "not json")]
    assert len({c.id for c in calls}) == 2
    assert server.chat_requests[0].body["tools"][0]["function"]["name"] == "refund"
    # Any other entry is sent as it is.
    raw = client(server).chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "raw"}])
    message = raw.http_response.json()["choices"][0]["message"]
    assert message["tool_calls"] == [{"id": "c9", "type": "function",
                                      "function": {"name": "x", "arguments": 7}}]
    assert message["content"] is None
    # Text replies are as before.
    assert ask(client(server), "hello") == "echo: hello"


def test_fixture_serves(fake_openai: FakeOpenAI) -> None:
    assert ask(client(fake_openai), "via fixture") == "echo: via fixture"
    assert fake_openai.base_url.startswith("http://127.0.0.1:")
    assert fake_openai.base_url.endswith("/v1")


def test_path_without_v1_prefix_is_served(server: FakeOpenAI) -> None:
    c = openai.OpenAI(api_key="test", base_url=server.url, max_retries=0)

    assert ask(c, "short path") == "echo: short path"
    assert server.requests[0].path == "/chat/completions"


# -- retries -----------------------------------------------------------------


def test_429_retry_after_is_honoured_by_the_sdk(server: FakeOpenAI) -> None:
    server.fail_next(1, status=429, retry_after=0.3)

    assert ask(client(server, max_retries=2), "patience") == "echo: patience"

    first, second = server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.timestamp - first.timestamp >= 0.3
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    assert first.body == second.body


def test_retry_after_ms_is_honoured_by_the_sdk(server: FakeOpenAI) -> None:
    server.fail_next(2, status=429, retry_after_ms=250)

    assert ask(client(server, max_retries=2), "ms") == "echo: ms"

    stamps = [r.timestamp for r in server.requests]
    assert [r.status for r in server.requests] == [429, 429, 200]
    assert stamps[1] - stamps[0] >= 0.25
    assert stamps[2] - stamps[1] >= 0.25


def test_429_carries_openai_error_and_retry_headers(server: FakeOpenAI) -> None:
    server.fail_next(1, status=429, retry_after=0.3, retry_after_ms=300)

    with pytest.raises(openai.RateLimitError) as caught:
        ask(client(server), "x")

    err = caught.value
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    assert err.response.headers["retry-after"] == "0.3"
    assert err.response.headers["retry-after-ms"] == "300"
    assert server.count == 1


def test_fail_next_custom_body_and_exhausted_retries(server: FakeOpenAI) -> None:
    body = {"error": {"message": "quota gone", "type": "insufficient_quota", "code": "quota"}}
    server.fail_next(3, status=429, retry_after_ms=20, body=body)

    with pytest.raises(openai.RateLimitError) as caught:
        ask(client(server, max_retries=2), "x")

    assert caught.value.code == "quota"
    assert "quota gone" in str(caught.value)
    assert [r.status for r in server.requests] == [429, 429, 429]
    # The queue is used up: the next request succeeds.
    assert ask(client(server), "after") == "echo: after"


def test_500_then_success_uses_default_backoff(server: FakeOpenAI) -> None:
    server.fail_next(1, status=500)

    assert ask(client(server, max_retries=1), "again") == "echo: again"

    first, second = server.requests
    assert (first.status, second.status) == (500, 200)
    # No Retry-After: the SDK waits 0.5 s less up to 25 % jitter.
    assert second.timestamp - first.timestamp >= 0.5 * 0.75


def test_async_client_retries_429(server: FakeOpenAI) -> None:
    server.fail_next(1, status=429, retry_after=0.2)

    async def run() -> str | None:
        c = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=1)
        async with c:
            completion = await c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "async"}]
            )
        return completion.choices[0].message.content

    assert asyncio.run(run()) == "echo: async"
    first, second = server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.timestamp - first.timestamp >= 0.2


def test_dropped_connection_is_retried(server: FakeOpenAI) -> None:
    server.drop_next(1)

    assert ask(client(server, max_retries=1), "drop") == "echo: drop"
    assert [r.status for r in server.requests] == [0, 200]


def test_dropped_connection_without_retries_is_a_connection_error(server: FakeOpenAI) -> None:
    server.drop_next(1)

    with pytest.raises(openai.APIConnectionError) as caught:
        ask(client(server), "drop")

    assert "without sending a response" in str(caught.value.__cause__)
    assert [r.status for r in server.requests] == [0]


def test_malformed_json_raises(server: FakeOpenAI) -> None:
    server.malformed_next(1)

    # The SDK lets the decoder's error through rather than wrapping it.
    with pytest.raises(ValueError):
        ask(client(server, max_retries=2), "broken")

    assert [r.status for r in server.requests] == [200]
    assert ask(client(server), "fine") == "echo: fine"


def post_chat(server: FakeOpenAI, text: str = "hi") -> http.client.HTTPResponse:
    """A chat request over plain HTTP (no client that decodes or limits anything); the
    response with its body unread."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}]})
    connection.request("POST", "/v1/chat/completions", body=body,
                       headers={"Content-Type": "application/json"})
    return connection.getresponse()


@pytest.mark.parametrize(("gzip", "declare_length"), [(True, True), (True, False), (False, True),
                                                      (False, False)])
def test_large_next_sends_a_completion_of_exactly_the_size(server: FakeOpenAI, gzip: bool,
                                                           declare_length: bool) -> None:
    size = 3 * (1 << 20) + 12345
    server.large_next(size=size, gzip=gzip, declare_length=declare_length)
    response = post_chat(server)
    raw = response.read()
    assert response.status == 200
    assert (response.getheader("Content-Encoding") == "gzip") is gzip
    assert (response.getheader("Content-Length") is not None) is declare_length
    assert (response.getheader("Transfer-Encoding") == "chunked") is not declare_length
    body = zlib.decompress(raw, 16 + zlib.MAX_WBITS) if gzip else raw
    assert len(body) == size
    content = json.loads(body)["choices"][0]["message"]["content"]
    assert content == "a" * large_completion(size, MODEL)[1]
    if gzip:
        assert len(raw) < size // 500  # a bomb: about a kilobyte per mebibyte
    assert post_chat(server).read() != raw  # the next request is answered as usual


def test_a_gzip_bomb_of_a_gibibyte_is_built_at_once() -> None:
    started = time.monotonic()
    head, fill, tail = large_completion(1 << 30, MODEL)
    bomb = gzip_bomb(head, fill, tail)
    assert len(bomb) < 2 << 20
    # Its start inflates to the completion's start; a client need read no further.
    start = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bomb[:4096], 1 << 20)
    assert start.startswith(head) and start[len(head):] == b"a" * (len(start) - len(head))
    assert time.monotonic() - started < 30


def test_drip_next_sends_headers_then_a_byte_per_interval_then_the_completion(
        server: FakeOpenAI) -> None:
    server.drip_next(interval=0.1, seconds=0.5)
    started = time.monotonic()
    response = post_chat(server, "slowly")
    assert response.status == 200
    first = response.read(1)
    body = first + response.read()
    assert time.monotonic() - started >= 0.5
    assert body.startswith(b"     {")  # five bytes of white space, one per interval
    assert json.loads(body)["choices"][0]["message"]["content"] == "echo: slowly"
    assert ask(client(server), "fast") == "echo: fast"


def test_an_endless_drip_stops_with_the_server() -> None:
    fake = FakeOpenAI().start()
    fake.drip_next(interval=0.1)
    response = post_chat(fake)
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read(3) == b"   "
    fake.stop()
    # Ends (the connection's 30 s timeout would fail the test), and never with a completion:
    # cleanly, or cut mid-chunk when the closing of connections wins the race.
    try:
        rest = response.read()
    except http.client.IncompleteRead as exc:
        rest = exc.partial
    assert rest.strip() == b""


def test_fail_matching_counts_down_and_spares_other_rows(server: FakeOpenAI) -> None:
    server.fail_matching("row-7", status=500, times=2)
    c = client(server)

    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(c, "row-7")
    assert ask(c, "row-8") == "echo: row-8"
    assert ask(c, "row-7") == "echo: row-7"


def test_fail_matching_forever(server: FakeOpenAI) -> None:
    server.fail_matching("poison", status=400)
    c = client(server)

    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            ask(c, "poison pill")
    assert [r.status for r in server.requests] == [400, 400, 400]


def test_reject_param_names_the_parameter(server: FakeOpenAI) -> None:
    server.reject_param("n", "'n' is not supported by this server")
    c = client(server, max_retries=2)

    with pytest.raises(openai.BadRequestError) as caught:
        ask(c, "x", n=2)

    assert caught.value.param == "n"
    assert "'n'" in str(caught.value)
    assert server.count == 1  # 400 is not retried
    assert ask(c, "without n") == "echo: without n"


def test_reject_param_with_condition(server: FakeOpenAI) -> None:
    server.reject_param("n", when=lambda value: value != 1)
    c = client(server)

    assert ask(c, "one", n=1) == "echo: one"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(c, "two", n=2)
    assert "Unsupported parameter: 'n'" in str(caught.value)


def test_fault_rates_are_seeded_and_replayable(server: FakeOpenAI) -> None:
    c = client(server)

    def statuses() -> list[int]:
        out: list[int] = []
        for i in range(60):
            try:
                ask(c, f"row {i}")
                out.append(200)
            except openai.APIStatusError as err:
                out.append(err.status_code)
                if err.status_code == 429:
                    assert err.response.headers["retry-after"] == "1"
        return out

    server.fault_rates(rate_429=0.3, retry_after=1.0, rate_500=0.2, seed=42)
    first = statuses()
    server.reset()
    server.fault_rates(rate_429=0.3, retry_after=1.0, rate_500=0.2, seed=42)
    second = statuses()

    assert first == second
    assert set(first) == {200, 429, 500}
    server.reset()
    assert statuses() == [200] * 60


def test_faults_leave_embeddings_alone_by_default(server: FakeOpenAI) -> None:
    server.fail_next(1, status=500)
    c = client(server)

    c.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.InternalServerError):
        ask(c, "x")

    server.fault_endpoints.add("embeddings")
    server.fail_next(1, status=503)
    with pytest.raises(openai.InternalServerError):
        c.embeddings.create(model="text-embedding-3-small", input="x")


def test_reset_clears_records_rules_and_faults(server: FakeOpenAI) -> None:
    server.rules.append(("x", "rule"))
    server.fail_matching("y", status=500)
    server.reject_param("n")
    c = client(server)
    ask(c, "x")
    server.fail_next(5)
    server.drop_next(5)
    server.malformed_next(5)
    server.large_next(5, size=1000)
    server.drip_next(5, seconds=60)
    server.fault_rates(rate_500=1.0)

    server.reset()

    assert server.count == 0
    assert server.requests == []
    assert ask(c, "x", n=2) == "echo: x"
    assert ask(c, "y") == "echo: y"


# -- latency and concurrency -------------------------------------------------


def test_latency_delays_each_answer(server: FakeOpenAI) -> None:
    server.latency = 0.15
    c = client(server)
    ask(c, "warm up")

    started = time.monotonic()
    ask(c, "slow")

    assert time.monotonic() - started >= 0.15


def test_concurrent_requests_overlap(server: FakeOpenAI) -> None:
    server.latency = 0.5

    async def run() -> list[str | None]:
        c = openai.AsyncOpenAI(api_key="test", base_url=server.base_url, max_retries=0)
        async with c:
            completions = await asyncio.gather(
                *(
                    c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"row {i}"}])
                    for i in range(20)
                )
            )
        return [x.choices[0].message.content for x in completions]

    answers = asyncio.run(run())

    assert sorted(answers, key=str) == sorted((f"echo: row {i}" for i in range(20)), key=str)
    assert server.count == 20
    assert server.max_in_flight == 20


# -- other endpoints ---------------------------------------------------------


def test_embeddings_equal_text_has_cosine_one(server: FakeOpenAI) -> None:
    c = client(server)

    # Default request: the SDK asks for base64 and decodes float32 itself.
    default = c.embeddings.create(model="text-embedding-3-small", input=["cat", "cat", "dog"])
    floats = c.embeddings.create(model="text-embedding-3-small", input="cat", encoding_format="float")

    cat1, cat2, dog = (d.embedding for d in default.data)
    assert [d.index for d in default.data] == [0, 1, 2]
    assert len(cat1) == 16
    assert cosine(cat1, cat2) == pytest.approx(1.0, abs=1e-9)
    assert cosine(cat1, floats.data[0].embedding) == pytest.approx(1.0, abs=1e-6)
    assert cosine(cat1, dog) < 0.99
    assert floats.data[0].embedding == embedding_vector("cat")
    assert server.requests[0].body["encoding_format"] == "base64"


def test_embeddings_dimensions(server: FakeOpenAI) -> None:
    result = client(server).embeddings.create(model="text-embedding-3-small", input="x", dimensions=64)
    assert len(result.data[0].embedding) == 64


def test_models_and_health(server: FakeOpenAI) -> None:
    models = client(server).models.list()

    assert "gpt-4o-mini" in [m.id for m in models.data]
    assert get_json(f"{server.url}/health") == {"status": "ok"}
    assert [r.path for r in server.requests] == ["/v1/models", "/health"]


def test_unknown_endpoint_is_404(server: FakeOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client(server).completions.create(model=MODEL, prompt="legacy")


def test_stop_closes_idle_keep_alive_connections() -> None:
    fake = FakeOpenAI().start()
    c = client(fake)
    ask(c, "keep alive")
    fake.stop()

    with pytest.raises(openai.APIConnectionError):
        ask(c, "after stop")


# -- separate process --------------------------------------------------------


def test_cli_prints_ready_and_serves() -> None:
    script = Path(__file__).with_name("fakeserver.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--latency", "0.05", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"READY (http://127\.0\.0\.1:(\d+)/v1)", line)
        assert match, line
        base_url = match.group(1)
        c = openai.OpenAI(api_key="test", base_url=base_url, max_retries=0)

        started = time.monotonic()
        assert ask(c, "over the process boundary") == "echo: over the process boundary"
        assert time.monotonic() - started >= 0.05
        assert get_json(base_url.removesuffix("/v1") + "/health") == {"status": "ok"}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_cli_fault_rates_reach_the_client() -> None:
    script = Path(__file__).with_name("fakeserver.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--rate-429", "1.0", "--retry-after", "0.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().split()[1]
        with pytest.raises(openai.RateLimitError) as caught:
            ask(openai.OpenAI(api_key="test", base_url=base_url, max_retries=0), "x")
        assert caught.value.response.headers["retry-after"] == "0.5"
    finally:
        process.terminate()
        process.wait(timeout=10)
