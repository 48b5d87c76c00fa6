"""The evaluation engine end to end: retries and backoff, error rows, concurrency, rate limits,
the lazily opened provider, and what the store looks like after Ctrl-C, SIGKILL or two writers.

The fake server runs in this process; `promptctl eval` runs either in-process (CliRunner) or as
a real subprocess pointed at the fake server, so signals reach a real interpreter.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from promptctl.engine.gateway import LazyProvider
from promptctl.errors import ProviderError
from promptctl.providers import ChatRequest, ChatResponse, Provider, RequestFailed
from promptctl.providers.openai import OpenAIProvider
from tests.fakeserver import FakeOpenAI, error_body, last_user_message
from tests.helpers import (
    cli_process,
    eval_json,
    finish_process,
    invoke,
    runs_json,
    show,
    show_rows,
    store_db,
    use_fake_openai,
)

KEY = "sk-test-engine-0f1e2d3c4b5a"
ECHO_PROMPT = """\
name: NAME
model: gpt-4o-mini
params:
  max_tokens: 16
messages:
  - role: user
    content: "WORD {{ q }}"
output:
  pattern: 'echo: WORD (?P<answer>\\w+)'
  type: string
metrics: [exact_match, format_validity]
evalset: ../evalsets/NAME.jsonl
"""


def rows_by_id(run_id: str) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in show_rows(run_id)}


def add_prompt(root: Path, name: str, rows: int, word: str = "Question") -> None:
    (root / "prompts" / f"{name}.yaml").write_text(
        ECHO_PROMPT.replace("NAME", name).replace("WORD", word), encoding="utf-8")
    (root / "evalsets" / f"{name}.jsonl").write_text(
        "".join(json.dumps({"id": f"r{i}", "input": {"q": f"w{i}"}, "expected": f"w{i}"}) + "\n"
                for i in range(1, rows + 1)), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """echo (5 rows), wide (12 rows) and big (200 rows): the same one-line prompt."""
    root = tmp_path / "proj"
    (root / "prompts").mkdir(parents=True)
    (root / "evalsets").mkdir()
    add_prompt(root, "echo", 5)
    add_prompt(root, "wide", 12)
    add_prompt(root, "big", 200)
    add_prompt(root, "other", 100, word="Query")
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def api(fake_openai: FakeOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The fake server as the endpoint, with KEY, and the current directory in the project."""
    return use_fake_openai(monkeypatch, fake_openai, KEY)


def gaps(api: FakeOpenAI) -> list[float]:
    stamps = [r.timestamp for r in api.chat_requests]
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


# -- retries and backoff -------------------------------------------------------


def test_retry_after_seconds_is_honoured(api: FakeOpenAI) -> None:
    # The SDK's own first backoff is at most 0.5 s: a gap of 0.8 s can only come from the header.
    api.fail_next(1, status=429, retry_after=0.8)
    run, _ = eval_json("prompts/echo.yaml", "--concurrency", "1")
    assert [r.status for r in api.requests[:2]] == [429, 200]
    assert gaps(api)[0] >= 0.8 - 0.01
    assert run["errors"] == 0
    assert run["retries"] == 1
    assert run["metrics"]["exact_match"] == {**run["metrics"]["exact_match"], "value": 1.0, "n": 5}
    assert rows_by_id(run["id"])["r1"]["attempts"] == 2


def test_retry_after_ms_is_honoured_and_preferred(api: FakeOpenAI) -> None:
    # retry-after-ms wins over a (shorter) retry-after, on a 503 as on a 429.
    api.fail_next(1, status=503, retry_after=0.05, retry_after_ms=700)
    run, _ = eval_json("prompts/echo.yaml", "--concurrency", "1")
    assert [r.status for r in api.requests[:2]] == [503, 200]
    assert gaps(api)[0] >= 0.7 - 0.01
    assert run["retries"] == 1 and run["errors"] == 0


def test_retries_are_counted_per_run(api: FakeOpenAI) -> None:
    api.fail_next(2, status=500, retry_after_ms=1)
    first, _ = eval_json("prompts/echo.yaml", "--concurrency", "1", "--no-cache")
    assert first["retries"] == 2
    api.drop_next(1)
    second, _ = eval_json("prompts/echo.yaml", "--concurrency", "1", "--no-cache")
    assert second["retries"] == 1  # not 3: the count belongs to the run
    assert show(first["id"])["run"]["retries"] == 2


def test_exhausted_retries_are_error_rows_with_the_last_status_and_message(
        api: FakeOpenAI) -> None:
    # One worker: r1 meets four 500s then a 503 (five attempts: the SDK's four retries),
    # r2 meets five 429s. Each keeps the status and message of its last attempt.
    api.fail_next(4, status=500, retry_after_ms=1, body=error_body(500, "first failures"))
    api.fail_next(1, status=503, retry_after_ms=1, body=error_body(503, "still overloaded"))
    api.fail_next(5, status=429, retry_after_ms=1, body=error_body(429, "slow down"))
    run, result = eval_json("prompts/echo.yaml", "--concurrency", "1", code=3)
    assert api.count == 10 + 3

    assert run["n"] == 5
    assert run["errors"] == 2
    assert run["retries"] == 8
    assert run["status"] == "complete"
    # Errors are not wrong answers: the metrics cover the three answered rows only.
    for name in ("exact_match", "format_validity"):
        assert run["metrics"][name]["n"] == 3
        assert run["metrics"][name]["value"] == 1.0

    rows = rows_by_id(run["id"])
    assert rows["r1"]["error"] == "HTTP 503: still overloaded"
    assert rows["r2"]["error"] == "HTTP 429: slow down"
    for rid in ("r1", "r2"):
        assert rows[rid]["attempts"] == 5
        assert rows[rid]["completion"] is None
        assert rows[rid]["answer"] is None
        assert rows[rid]["scores"] is None
        assert rows[rid]["cached"] is False
    for rid in ("r3", "r4", "r5"):
        assert rows[rid]["error"] is None and rows[rid]["attempts"] == 1

    assert "2 request(s) failed after every retry" in result.stderr
    assert f"promptctl eval --resume {run['id']}" in result.stderr


def provider_call(api: FakeOpenAI, *, timeout: float, max_retries: int,
                  aiohttp: bool = False) -> ChatResponse:
    async def main() -> ChatResponse:
        provider = OpenAIProvider("fake", api.base_url, KEY, concurrency=2, max_retries=max_retries,
                                  timeout=timeout, aiohttp=aiohttp)
        try:
            return await provider.complete(
                ChatRequest("gpt-4o-mini", [{"role": "user", "content": "Question w1"}], {}))
        finally:
            await provider.aclose()

    return asyncio.run(main())


# Both of the SDK's transports: httpx2 in-process, aiohttp in the sender processes.
transports = pytest.mark.parametrize("aiohttp", [False, True], ids=["httpx2", "aiohttp"])


@transports
def test_a_timeout_is_retried(api: FakeOpenAI, aiohttp: bool) -> None:
    calls: list[float] = []

    def slow_first(body: dict[str, Any]) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            time.sleep(1.5)
        return "echo: " + last_user_message(body)

    api.responder = slow_first
    response = provider_call(api, timeout=0.4, max_retries=2, aiohttp=aiohttp)
    assert response.text == "echo: Question w1"
    assert response.attempts == 2
    assert len(calls) == 2


@transports
def test_dropped_connections_until_retries_run_out_fail_the_request(api: FakeOpenAI,
                                                                     aiohttp: bool) -> None:
    api.drop_next(2)
    with pytest.raises(RequestFailed, match="connection failed") as info:
        provider_call(api, timeout=5, max_retries=1, aiohttp=aiohttp)
    assert info.value.attempts == 2
    assert [r.status for r in api.requests] == [0, 0]


@transports
def test_timeouts_until_retries_run_out_fail_the_request(api: FakeOpenAI, aiohttp: bool) -> None:
    api.latency = 1.0
    with pytest.raises(RequestFailed, match="timed out") as info:
        provider_call(api, timeout=0.3, max_retries=1, aiohttp=aiohttp)
    assert info.value.attempts == 2


# -- concurrency and the shared client -------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_requests_in_flight_never_exceed_the_concurrency(api: FakeOpenAI, concurrency: int) -> None:
    api.latency = 0.1
    run, _ = eval_json("prompts/wide.yaml", "--concurrency", str(concurrency), "--limit", "9")
    assert api.count == 9
    assert run["n"] == 9 and run["errors"] == 0
    if concurrency == 1:
        assert api.max_in_flight == 1
    else:
        assert 1 < api.max_in_flight <= concurrency


def test_all_workers_share_one_provider(api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # One provider is one SDK client, so every worker draws on one connection pool.
    import promptctl.engine.lifecycle

    real = promptctl.engine.lifecycle.open_provider
    opened: list[tuple[Any, ...]] = []

    def counting_open(*args: Any, **kwargs: Any) -> Provider:
        opened.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(promptctl.engine.lifecycle, "open_provider", counting_open)
    api.latency = 0.05
    eval_json("prompts/wide.yaml", "--concurrency", "4")
    assert api.count == 12
    assert len(opened) == 1
    assert opened[0][1] == 4  # the pool is sized to the concurrency
    assert 1 < api.max_in_flight <= 4


class CountingProvider(Provider):
    name = "counting"
    base_url = "http://counting.invalid"

    def __init__(self) -> None:
        self.closed = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(text="x")

    async def aclose(self) -> None:
        self.closed += 1


def test_lazy_provider_opens_one_provider_for_every_worker() -> None:
    opened: list[CountingProvider] = []

    def opener() -> Provider:
        opened.append(CountingProvider())
        return opened[-1]

    async def main() -> list[Provider]:
        lazy = LazyProvider(opener)
        got = await asyncio.gather(*(lazy.get() for _ in range(16)))
        await lazy.aclose()
        return list(got)

    got = asyncio.run(main())
    assert len(opened) == 1
    assert all(p is opened[0] for p in got)
    assert opened[0].closed == 1


def test_lazy_provider_never_opened_is_never_closed() -> None:
    calls: list[int] = []

    def opener() -> Provider:
        calls.append(1)
        return CountingProvider()

    asyncio.run(LazyProvider(opener).aclose())
    assert calls == []


def test_a_provider_that_cannot_be_opened_stops_the_run_after_one_try(
        api: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    import promptctl.engine.lifecycle

    calls: list[int] = []

    def failing_open(*args: Any, **kwargs: Any) -> Provider:
        calls.append(1)
        raise ProviderError("the model server did not start", fix="look at its log")

    monkeypatch.setattr(promptctl.engine.lifecycle, "open_provider", failing_open)
    result = invoke("eval", "prompts/wide.yaml", "--concurrency", "8", code=3)
    assert "the model server did not start" in result.stderr
    assert calls == [1]
    assert api.count == 0
    (run,) = runs_json()
    assert run["status"] == "failed"


# -- rate limits -------------------------------------------------------------------


def test_rpm_spaces_requests_end_to_end(api: FakeOpenAI) -> None:
    # 60 rpm: a bucket of one request, refilled once a second; four workers cannot beat it.
    run, _ = eval_json("prompts/echo.yaml", "--rpm", "60", "--limit", "3", "--concurrency", "4")
    assert api.count == 3 and run["errors"] == 0
    # Without the limit the requests would arrive together; the margin below the 1 s the limit
    # keeps is for arrival jitter on a loaded machine, not for speed.
    spacing = gaps(api)
    assert spacing[0] >= 0.6
    assert spacing[1] >= 0.6


def test_tpm_spaces_requests_end_to_end(api: FakeOpenAI) -> None:
    # Each request is estimated at 16 max tokens + 11 characters / 4 = 18 tokens; at 1200 tpm
    # (20 tokens a second, a bucket of 20) the second waits about 0.8 s.
    run, _ = eval_json("prompts/echo.yaml", "--tpm", "1200", "--limit", "2", "--concurrency", "4")
    assert api.count == 2 and run["errors"] == 0
    assert gaps(api)[0] >= 0.5


def test_an_endpoints_rpm_from_the_config_applies(
        api: FakeOpenAI, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", KEY)
    (project / "promptctl.yaml").write_text(
        f"endpoints:\n  fake: {{base_url: '{api.base_url}', api_key_env: FAKE_KEY, rpm: 60}}\n",
        encoding="utf-8")
    eval_json("prompts/echo.yaml", "--model", "fake/gpt-4o-mini", "--limit", "2")
    assert api.count == 2
    assert gaps(api)[0] >= 0.6


# -- subprocesses: the lazily imported SDK, signals and two writers ------------------


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    return finish_process(proc, timeout)


def query(tmp_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(store_db(tmp_path), timeout=30)
    try:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
    finally:
        conn.close()


def stored_rows(tmp_path: Path) -> int:
    """Rows committed so far (0 while the store or its tables do not exist yet)."""
    if not store_db(tmp_path).exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{store_db(tmp_path)}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def wait_for_rows(tmp_path: Path, proc: subprocess.Popen[str], at_least: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = stored_rows(tmp_path)
        if n >= at_least:
            return n
        if proc.poll() is not None:
            pytest.fail(f"the eval ended before it was stopped: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {at_least} rows stored in time: {proc.communicate()}")


def check_consistent(tmp_path: Path, run_id: str) -> int:
    """The store opens, passes integrity_check, and every stored row is a whole answer."""
    assert query(tmp_path, "PRAGMA integrity_check") == [("ok",)]
    assert query(tmp_path, "SELECT kind, row_id, sample, COUNT(*) FROM rows WHERE run_id = ? "
                 "GROUP BY 1, 2, 3 HAVING COUNT(*) > 1", run_id) == []
    rows = query(tmp_path, "SELECT row_id, answer, error FROM rows WHERE run_id = ?", run_id)
    for row_id, answer, error in rows:
        assert error is None
        assert json.loads(answer) == "w" + row_id[1:]
    return len(rows)


def resume_to_the_end(api: FakeOpenAI, tmp_path: Path, run_id: str, stored: int, total: int) -> None:
    """`--resume` sends exactly the rows the store lacks and ends with every row once."""
    api.reset()
    api.latency = 0.0
    run, _ = eval_json("--resume", run_id, "--concurrency", "16")
    assert run["status"] == "complete"
    assert run["n"] == total and run["errors"] == 0
    # Rows answered but not stored may have reached the cache first: those are not sent again.
    assert api.count + run["cached"] == total - stored
    assert run["metrics"]["exact_match"] == {**run["metrics"]["exact_match"], "value": 1.0, "n": total}
    assert check_consistent(tmp_path, run_id) == total
    assert sorted(r for (r,) in query(tmp_path, "SELECT row_id FROM rows WHERE run_id = ?", run_id)) \
        == sorted(f"r{i}" for i in range(1, total + 1))


def test_a_fully_cached_run_does_not_import_the_sdk(api: FakeOpenAI, project: Path) -> None:
    code, _, err = finish(cli_process("eval", "prompts/echo.yaml", "--json", cwd=project))
    assert code == 0, err
    assert "OPENAI-IMPORTED True" in err  # the check can fail: a run that sends imports it
    assert api.count == 5
    code, out, err = finish(cli_process("eval", "prompts/echo.yaml", "--json", cwd=project))
    assert code == 0, err
    assert "OPENAI-IMPORTED False" in err
    assert api.count == 5
    (run,) = json.loads(out)["runs"]
    assert run["cached"] == 5


def test_sigkill_loses_at_most_the_rows_in_flight_and_resume_finishes(
        api: FakeOpenAI, project: Path, tmp_path: Path) -> None:
    api.latency = 0.05
    proc = cli_process("eval", "prompts/big.yaml", "--concurrency", "4", "--json", cwd=project)
    wait_for_rows(tmp_path, proc, 20)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    time.sleep(0.2)  # requests the server was still answering get recorded
    sent = api.count
    ((run_id, status),) = query(tmp_path, "SELECT id, status FROM runs")
    assert status == "running"
    stored = check_consistent(tmp_path, run_id)
    assert 20 <= stored < 200
    # Lost: only the requests in flight (concurrency 4); every answer that arrived was committed.
    assert 0 <= sent - stored <= 4
    # A run that never finished still lists and shows.
    (listed,) = runs_json()
    assert listed["id"] == run_id and listed["status"] == "running"
    assert len(rows_by_id(run_id)) == stored
    assert run_id in invoke("runs").stdout
    ((some_row,),) = query(tmp_path, "SELECT row_id FROM rows WHERE run_id = ? LIMIT 1", run_id)
    assert some_row in invoke("show", run_id).stdout
    resume_to_the_end(api, tmp_path, run_id, stored, 200)


# SIGTERM is what CI cancellation and `timeout` send: it ends a run as Ctrl-C does.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_marks_the_run_interrupted_and_names_the_resume_command(
        api: FakeOpenAI, project: Path, tmp_path: Path, sig: signal.Signals) -> None:
    api.latency = 0.05
    proc = cli_process("eval", "prompts/big.yaml", "--concurrency", "4", "--json", cwd=project)
    seen = wait_for_rows(tmp_path, proc, 20)
    proc.send_signal(sig)
    code, out, err = finish(proc, timeout=30)
    assert code == 130, err
    ((run_id, status, summary),) = query(tmp_path, "SELECT id, status, summary FROM runs")
    assert status == "interrupted"
    assert f"promptctl eval --resume {run_id}" in err
    assert "Traceback" not in err
    assert out == ""  # --json: no run finished, so nothing on stdout
    stored = check_consistent(tmp_path, run_id)
    assert seen <= stored < 200
    assert json.loads(summary)["n"] == stored  # the summary covers the rows kept
    resume_to_the_end(api, tmp_path, run_id, stored, 200)


def test_two_processes_write_one_store_at_once(api: FakeOpenAI, project: Path,
                                               tmp_path: Path) -> None:
    # Neither process gets an answer until both have sent a request, so their runs overlap.
    both = threading.Event()
    words: set[str] = set()

    def responder(body: dict[str, Any]) -> str:
        text = last_user_message(body)
        words.add(text.split()[0])
        if len(words) == 2:
            both.set()
        both.wait(timeout=30)
        return "echo: " + text

    api.responder = responder
    api.latency = 0.01
    assert not store_db(tmp_path).exists()  # both also race to create and migrate it
    procs = [cli_process("eval", f"prompts/{name}.yaml", "--concurrency", "4", "--json", cwd=project)
             for name in ("big", "other")]
    # Beyond SQLite's 60 s busy timeout: a lock wait ends in its own error, not in this one.
    results = [finish(p, timeout=150) for p in procs]
    for code, _, err in results:
        assert code == 0, err
    runs = [json.loads(out)["runs"][0] for _, out, _ in results]
    assert [r["n"] for r in runs] == [200, 100]
    assert [r["errors"] for r in runs] == [0, 0]
    assert api.count == 300
    for run, total in zip(runs, (200, 100), strict=True):
        assert check_consistent(tmp_path, run["id"]) == total
        assert query(tmp_path, "SELECT status FROM runs WHERE id = ?", run["id"]) == [("complete",)]
    assert query(tmp_path, "SELECT COUNT(*) FROM cache") == [(300,)]
    assert both.is_set()
    assert query(tmp_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_provider_error_stops_every_worker(api: FakeOpenAI) -> None:
    # A revoked key mid-run is fatal: the run stops (exit 3), marked failed, with its rows so far.
    calls: list[int] = []

    def responder(body: dict[str, Any]) -> str:
        calls.append(1)
        if len(calls) == 4:
            api.fail_next(1, status=401)
        return "echo: " + last_user_message(body)

    api.responder = responder
    api.latency = 0.02
    result = invoke("eval", "prompts/wide.yaml", "--concurrency", "2", code=3)
    assert "refused the credentials" in result.stderr
    assert api.count < 12
    (run,) = runs_json()
    assert run["status"] == "failed"
    assert 0 < run["n"] < 12
