"""Requests sent from child processes (`SenderPool`): the same answers, retries, fatal errors,
Ctrl-C and SIGKILL behaviour as in-process sending, and no process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from promptctl.errors import InputError, ProviderError
from promptctl.providers import pool as pool_module
from promptctl.providers.pool import PROCESSES_ENV, SenderPool, sender_processes
from tests.fakeserver import FakeOpenAI, last_user_message
from tests.helpers import (
    cli_process,
    eval_json,
    invoke,
    runs_json,
    show_rows,
    store_db,
    use_fake_openai,
    write_echo_project,
)

KEY = "sk-test-pool-5e4d3c2b1a09"


@pytest.fixture
def api(fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    root = tmp_path / "proj"
    root.mkdir()
    write_echo_project(root, words=[f"w{i}" for i in range(1, 121)])
    monkeypatch.chdir(root)
    monkeypatch.setenv(PROCESSES_ENV, "2")
    return use_fake_openai(monkeypatch, fake_openai, KEY)


def sender_pids(parent: int) -> list[int]:
    """Live sender processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"promptctl.providers._sender" in cmdline and int(stat[1]) == parent and stat[0] != "Z":
            found.append(int(entry.name))
    return found


def gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.02)


# -- how many processes ------------------------------------------------------------


def test_low_concurrency_sends_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    assert sender_processes(8) == 1
    assert sender_processes(15) == 1


def test_high_concurrency_uses_a_process_per_core_with_eight_connections_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert sender_processes(16) == 2
    assert sender_processes(50) == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert sender_processes(50) == 1


def test_the_environment_variable_overrides_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROCESSES_ENV, "3")
    assert sender_processes(8) == 3
    assert sender_processes(2) == 2  # never more processes than connections
    monkeypatch.setenv(PROCESSES_ENV, "1")
    assert sender_processes(200) == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(PROCESSES_ENV, bad)
        with pytest.raises(InputError, match=PROCESSES_ENV) as info:
            sender_processes(8)
        assert info.value.fix is not None


def test_a_bad_setting_stops_eval_before_a_run_is_created(api: FakeOpenAI, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROCESSES_ENV, "many")
    result = invoke("eval", "prompts/echo.yaml", code=2)
    assert PROCESSES_ENV in result.stderr and "fix:" in result.stderr
    assert api.count == 0
    assert runs_json() == []


# -- a run through sender processes ------------------------------------------------------


def test_a_run_through_two_sender_processes_gets_every_answer(api: FakeOpenAI) -> None:
    run, _ = eval_json("prompts/echo.yaml", "--concurrency", "8")
    assert run["status"] == "complete"
    assert run["n"] == 120 and run["errors"] == 0
    assert run["metrics"]["exact_match"]["value"] == 1.0
    assert api.count == 120
    senders = run["senders"]
    assert senders["processes"] == 2
    assert sum(senders["requests"]) == 120
    assert min(senders["requests"]) > 0  # both did some of the work
    assert api.max_in_flight <= 8
    # The rows keep what the server said, as in-process sending does.
    assert run["system_fingerprints"] == ["fp_fake"]
    assert run["tokens"]["prompt"] > 0


def test_the_main_process_does_not_import_the_sdk(api: FakeOpenAI, tmp_path: Path) -> None:
    proc = cli_process("eval", "prompts/echo.yaml", "--json", cwd=tmp_path / "proj")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "OPENAI-IMPORTED False" in err
    assert api.count == 120  # it did send: from the children
    (run,) = json.loads(out)["runs"]
    assert run["senders"]["processes"] == 2


def test_retry_after_is_honoured_and_counted(api: FakeOpenAI) -> None:
    api.fail_next(1, status=429, retry_after=1)
    run, _ = eval_json("prompts/echo.yaml", "--limit", "1")
    assert run["errors"] == 0 and run["retries"] == 1
    stamps = [r.timestamp for r in api.chat_requests]
    assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.9


def test_exhausted_retries_give_an_error_row_with_the_last_status(api: FakeOpenAI) -> None:
    api.fail_matching("w3", status=503)
    run, result = eval_json("prompts/echo.yaml", "--limit", "5", code=3)
    assert run["errors"] == 1 and run["n"] == 5
    rows = {r["row_id"]: r for r in show_rows(run["id"])}
    assert rows["r3"]["error"].startswith("HTTP 503")
    assert rows["r3"]["attempts"] == 5
    assert rows["r3"]["answer"] is None


def test_refused_credentials_stop_the_run_with_exit_3(api: FakeOpenAI) -> None:
    api.fail_next(100, status=401)
    result = invoke("eval", "prompts/echo.yaml", "--limit", "10", code=3)
    assert "refused the credentials" in result.stderr
    assert KEY not in result.stderr
    (run,) = runs_json()
    assert run["status"] == "failed"
    assert f"promptctl eval --resume {run['id']}" in result.stderr


def test_an_unknown_model_is_an_input_error(api: FakeOpenAI) -> None:
    api.fail_next(100, status=404)
    result = invoke("eval", "prompts/echo.yaml", "--limit", "10", code=2)
    assert "does not know model" in result.stderr


# -- when a process dies -----------------------------------------------------------------


def test_a_sender_that_dies_fails_the_run_which_then_resumes(api: FakeOpenAI, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    killed: list[int] = []

    def responder(body: dict[str, Any]) -> str:
        if len(api.chat_requests) == 30 and not killed:
            victims = sender_pids(os.getpid())
            os.kill(victims[0], signal.SIGKILL)
            killed.append(victims[0])
        return "echo: " + last_user_message(body)

    api.responder = responder
    api.latency = 0.01
    result = invoke("eval", "prompts/echo.yaml", "--concurrency", "4", code=3)
    (run,) = runs_json()
    assert killed
    assert "request sender process" in result.stderr and "exited with code -9" in result.stderr
    assert run["status"] == "failed"
    assert f"promptctl eval --resume {run['id']}" in result.stderr
    assert gone(sender_pids(os.getpid()))  # the other one was stopped
    api.responder = None
    monkeypatch.setenv(PROCESSES_ENV, "1")
    resumed, _ = eval_json("--resume", run["id"])
    assert resumed["status"] == "complete" and resumed["n"] == 120 and resumed["errors"] == 0
    assert resumed["metrics"]["exact_match"]["value"] == 1.0


def test_a_sender_that_cannot_start_is_a_provider_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module.sys, "executable", "/bin/false")

    async def main() -> None:
        senders = SenderPool("fake", "http://127.0.0.1:9/v1", KEY, concurrency=4, processes=2)
        try:
            await senders.start()
        finally:
            await senders.aclose()

    with pytest.raises(ProviderError, match="could not start") as info:
        asyncio.run(main())
    assert PROCESSES_ENV in (info.value.fix or "")


def test_sigkill_of_the_main_process_takes_the_senders_with_it(api: FakeOpenAI, tmp_path: Path) -> None:
    api.latency = 0.05
    proc = cli_process("eval", "prompts/echo.yaml", "--concurrency", "4", "--json",
                       cwd=tmp_path / "proj")
    wait_for(lambda: api.count >= 10)
    senders = sender_pids(proc.pid)
    assert len(senders) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert gone(senders)


def test_ctrl_c_on_the_whole_process_group_interrupts_cleanly(api: FakeOpenAI, tmp_path: Path) -> None:
    # A terminal's Ctrl-C reaches every process of the group: the senders must leave it to
    # the main process, which marks the run interrupted and stops them.
    api.latency = 0.05
    proc = cli_process("eval", "prompts/echo.yaml", "--concurrency", "4", "--json",
                       cwd=tmp_path / "proj", start_new_session=True)
    wait_for(lambda: api.count >= 10)
    senders = sender_pids(proc.pid)
    assert len(senders) == 2
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "promptctl eval --resume" in err
    assert gone(senders)
    conn = sqlite3.connect(store_db(tmp_path))
    try:
        ((status, summary),) = conn.execute("SELECT status, summary FROM runs").fetchall()
    finally:
        conn.close()
    n = json.loads(summary)["n"]
    assert status == "interrupted" and 0 < n < 120
