"""`promptctl cache stats` and `promptctl cache clear`, and what eval writes to the cache."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fakeserver import FakeOpenAI
from tests.helpers import eval_run, invoke, run_cli, show, store_db

pytestmark = pytest.mark.both_stores  # run on SQLite, then on PostgreSQL


def eval_echo(*args: str, code: int = 0) -> dict[str, Any]:
    return eval_run("prompts/echo.yaml", *args, code=code)


def stats() -> dict[str, Any]:
    info: dict[str, Any] = json.loads(invoke("cache", "stats", "--json").stdout)
    return info


def clear(*args: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(invoke("cache", "clear", *args, "--json").stdout)
    return info


@pytest.fixture
def api(api: FakeOpenAI, echo_project: Path) -> FakeOpenAI:
    """The fake server, with the current directory in the echo project."""
    return api


def test_stats_on_an_empty_store(api: FakeOpenAI) -> None:
    info = stats()
    assert info["entries"] == 0
    assert info["response_bytes"] == 0
    assert info["oldest"] is None and info["newest"] is None
    human = invoke("cache", "stats").stdout
    assert "entries   0" in human


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_stats_counts_the_entries_a_run_wrote(api: FakeOpenAI, tmp_path: Path) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    eval_echo()
    assert api.count == 5
    info = stats()
    assert info["entries"] == 5
    assert info["response_bytes"] > 0
    assert info["store"] == str(store_db(tmp_path))
    assert info["store_bytes"] > 0
    for stamp in (info["oldest"], info["newest"]):
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")) >= before
    # A cached re-run adds nothing.
    eval_echo()
    assert stats()["entries"] == 5
    eval_echo("--evalset", "evalsets/echo.jsonl")  # same requests, same keys
    assert stats()["entries"] == 5
    assert api.count == 5
    human = invoke("cache", "stats").stdout
    assert "entries   5" in human


def test_a_cached_rerun_says_it_paid_nothing_and_what_the_cache_saved(api: FakeOpenAI) -> None:
    first = eval_echo()
    assert first["cost_usd"] > 0
    assert first["spent_usd"] == first["cost_usd"] and first["saved_usd"] == 0
    shown = invoke("show", first["id"]).stdout
    assert f"cost ${first['cost_usd']:.4f}\n" in shown  # all of it paid now: one figure
    again = eval_echo()
    assert api.count == 5
    # The answers cost what they cost (the same figure); this run paid nothing for them.
    assert again["cost_usd"] == first["cost_usd"]
    assert again["spent_usd"] == 0 and again["saved_usd"] == first["cost_usd"]
    assert (f"cost ${first['cost_usd']:.4f} (paid now $0.0000, saved by the cache "
            f"${first['cost_usd']:.4f})") in invoke("show", again["id"]).stdout


def test_no_cache_writes_nothing(api: FakeOpenAI) -> None:
    run = eval_echo("--no-cache")
    assert run["cached"] == 0
    assert stats()["entries"] == 0


def test_error_responses_are_not_cached(api: FakeOpenAI) -> None:
    api.fail_next(5, status=503, retry_after_ms=1)  # r1's five attempts (one worker)
    run = eval_echo("--concurrency", "1", code=3)
    assert run["errors"] == 1
    assert stats()["entries"] == 4


def test_clear_older_than_keeps_fresh_entries(api: FakeOpenAI) -> None:
    eval_echo()
    for age in ("1d", "12h", "30m", "45s", "2w", " 1d "):
        assert clear("--older-than", age)["deleted"] == 0, age
    assert stats()["entries"] == 5
    human = invoke("cache", "clear", "--older-than", "1d").stdout
    assert "deleted 0 cached completion(s) older than 1d" in human


@pytest.mark.sqlite_only  # reads the SQLite file itself
def test_clear_older_than_deletes_only_old_entries(api: FakeOpenAI, tmp_path: Path) -> None:
    eval_echo()
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="milliseconds")
    with sqlite3.connect(store_db(tmp_path)) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM cache ORDER BY key LIMIT 2")]
        conn.executemany("UPDATE cache SET created_at = ? WHERE key = ?",
                         [(old.replace("+00:00", "Z"), k) for k in keys])
    conn.close()
    result = clear("--older-than", "1d")
    assert result["deleted"] == 2
    assert result["before"] is not None
    assert stats()["entries"] == 3
    assert clear("--older-than", "1d")["deleted"] == 0


def test_clear_deletes_everything_and_a_rerun_sends_again(api: FakeOpenAI) -> None:
    first = eval_echo()
    assert api.count == 5
    eval_echo()
    assert api.count == 5  # served from the cache
    assert clear() == {"deleted": 5, "before": None}
    assert stats()["entries"] == 0
    again = eval_echo()
    assert api.count == 10
    assert again["cached"] == 0
    assert again["metrics"] == first["metrics"]
    # Stored runs keep their rows: clearing the cache loses only re-use.
    shown = show(first["id"])
    assert len(shown["rows"]) == 5
    assert invoke("cache", "clear").stdout.strip() == "deleted 5 cached completion(s)"


@pytest.mark.parametrize("age", ["10 days", "1y", "-1d", "1.5h", ""])
def test_a_bad_duration_is_a_usage_error(api: FakeOpenAI, age: str) -> None:
    eval_echo()
    result = invoke("cache", "clear", "--older-than", age, code=2)
    assert "is not a duration" in result.stderr
    assert "30d" in result.stderr  # the fix shows the accepted form
    assert stats()["entries"] == 5


def test_cache_without_a_subcommand_shows_help(api: FakeOpenAI) -> None:
    result = run_cli("cache")
    assert "stats" in result.output and "clear" in result.output
