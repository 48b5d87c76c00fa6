"""Storage failures: a damaged file, a read-only or immutable store, a full disk, a PostgreSQL
server that is down or goes away. Each is exit 2 or 3 with the cause and the fix, never a
traceback, and what was stored before stays stored (a resume finishes the run)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import Result

from tests.fakeserver import FakeOpenAI
from tests.helpers import eval_run, invoke, run_cli, write_echo_project


def db_of(root: Path) -> Path:
    return root / ".promptctl" / "results.db"


def failed(result: Result, code: int, *words: str) -> str:
    """The error text of a command that had to fail with `code`, naming each of `words`."""
    text = result.stderr
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit), result.output
    for word in words:
        assert word in text, text
    return text


def settle(db: Path) -> None:
    """Everything in the main file, no -wal or -shm beside it (as a copied store is)."""
    import gc

    gc.collect()  # stores the in-process commands left open
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    assert not db.with_name(db.name + "-wal").exists()


def stored_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
    finally:
        conn.close()


# -- a damaged file ---------------------------------------------------------------------------


def test_a_damaged_results_db_is_exit_2_with_the_recovery_fix(project: Path) -> None:
    eval_run("prompts/echo.yaml")
    db = db_of(project)
    settle(db)
    data = bytearray(db.read_bytes())
    assert len(data) > 3 * 4096
    data[4096:len(data)] = b"\xa5" * (len(data) - 4096)  # every page after the first
    db.write_bytes(bytes(data))
    for args in (["runs"], ["eval", "prompts/echo.yaml"], ["cache", "stats"]):
        text = failed(run_cli(*args), 2, "damaged", ".recover", str(db))
        assert "malformed" in text
    assert db.read_bytes()[4096:] == bytes(data[4096:])  # nothing was written over it


# -- read-only, immutable, unwritable ----------------------------------------------------------


@contextmanager
def unwritable(path: Path) -> Iterator[str]:
    """`path` that this process cannot change: immutable (chattr +i) as root, whom mode bits
    do not stop, else mode bits."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(path)], capture_output=True, check=False).returncode:
            pytest.skip("chattr +i is not available here, and root ignores mode bits")
        try:
            yield "chattr -i"
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=False)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield "chmod u+w"
        finally:
            path.chmod(mode)


def test_an_unwritable_store_file_names_the_cause_and_keeps_the_runs(project: Path) -> None:
    first = eval_run("prompts/echo.yaml")
    db = db_of(project)
    settle(db)
    with unwritable(db) as fix:
        text = failed(run_cli("eval", "prompts/echo.yaml", "--no-cache"), 2, str(db), fix)
        assert "move this one away" not in text and "file" in text
        # Reading still works.
        assert [r["id"] for r in json.loads(invoke("runs", "--json").stdout)["runs"]] == [first["id"]]
    second = eval_run("prompts/echo.yaml", "--no-cache")  # once the cause is gone
    assert second["n"] == 5


@pytest.mark.parametrize("existing", [True, False])
def test_an_unwritable_promptctl_directory_names_it(project: Path, existing: bool) -> None:
    directory = project / ".promptctl"
    if existing:
        eval_run("prompts/echo.yaml")
        settle(db_of(project))  # no process has it open: its -wal is gone
    else:
        directory.mkdir()
    with unwritable(directory) as fix:
        text = failed(run_cli("eval", "prompts/echo.yaml", "--no-cache"), 2,
                      f"directory {directory}", fix)
        assert "move this one away" not in text and "unable to open" not in text.split("\n")[0]
    assert eval_run("prompts/echo.yaml", "--no-cache")["n"] == 5


@contextmanager
def mounted(*args: str) -> Iterator[None]:
    target = args[-1]
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_store_on_a_read_only_file_system_says_so(project: Path) -> None:
    eval_run("prompts/echo.yaml")
    directory = project / ".promptctl"
    with mounted("--bind", "-o", "ro", str(directory), str(directory)):
        probe = directory / "probe"
        with pytest.raises(OSError):
            probe.write_text("x")
        failed(run_cli("eval", "prompts/echo.yaml", "--no-cache"), 2, "read-only file system",
               "remount")
    assert eval_run("prompts/echo.yaml", "--no-cache")["n"] == 5


# -- a full disk ------------------------------------------------------------------------------

BIG_WORDS = [f"w{i}-" + "x" * 20_000 for i in range(40)]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_that_fills_mid_run_is_exit_3_and_resume_finishes_the_run(
        api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_echo_project(tmp_path / "proj", words=BIG_WORDS)
    monkeypatch.chdir(root)
    disk = tmp_path / "disk"
    disk.mkdir()
    monkeypatch.setenv("PROMPTCTL_STORE", f"sqlite:///{disk / 'results.db'}")
    with mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)):
        result = run_cli("eval", "prompts/echo.yaml", "--concurrency", "1", "--json")
        failed(result, 3, "disk holding the results store is full", "--resume")
        kept = stored_rows(disk / "results.db")
        assert 0 < kept < len(BIG_WORDS)
        (run_id,) = [r["id"] for r in json.loads(invoke("runs", "--json").stdout)["runs"]]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        sent = api.count
        run = eval_run("--resume", run_id)
        assert run["id"] == run_id and run["n"] == len(BIG_WORDS) and run["errors"] == 0
        assert stored_rows(disk / "results.db") == len(BIG_WORDS)
        # Only what was not stored went out again (and the few-shot-free prompt has none).
        assert api.count - sent <= len(BIG_WORDS) - kept + 1


def test_a_full_disk_in_the_store_maps_to_exit_3_and_keeps_earlier_rows(tmp_path: Path) -> None:
    # The same failure without root: SQLite's page limit stands in for the disk's size.
    from promptctl.store import SQLiteStore, StoreUnavailable, utcnow

    store = SQLiteStore(tmp_path / "results.db")
    store.create_run({"id": "01full", "created_at": utcnow(), "status": "running",
                      "prompt_name": "p", "prompt_path": "p.yaml", "prompt_version": "v",
                      "prompt_source": "s", "model": "m", "endpoint": "e", "params": {},
                      "n_planned": 100})
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + 30}")
    written = 0
    with pytest.raises(StoreUnavailable) as info:
        for i in range(100):
            store.write_rows([{"run_id": "01full", "kind": "eval", "position": i, "row_id": f"r{i}",
                               "sample": 0, "input": {"t": "y" * 8000}, "messages": [],
                               "created_at": utcnow()}], cache=[(f"k{i}", {"text": "z" * 100})])
            written += 1
    assert info.value.exit_code == 3 and "full" in info.value.message
    assert info.value.fix is not None and "--resume" in info.value.fix
    assert 0 < written < 100
    assert len(list(store.iter_rows("01full"))) == written  # the failed batch went whole
    assert store.cache_get(f"k{written}") is None and store.cache_get("k0") is not None
    store.conn.execute("PRAGMA max_page_count = 1000000")
    store.write_rows([{"run_id": "01full", "kind": "eval", "position": written,
                       "row_id": f"r{written}", "sample": 0, "input": {}, "messages": [],
                       "created_at": utcnow()}])
    assert len(list(store.iter_rows("01full"))) == written + 1
    store.close()


# -- PostgreSQL -------------------------------------------------------------------------------


def test_an_unreachable_server_is_exit_3(project: Path) -> None:
    url = "postgresql://someone@127.0.0.1:1/promptctl"
    for args in (["runs"], ["eval", "prompts/echo.yaml"]):
        failed(run_cli("--store", url, *args), 3, "unreachable", "127.0.0.1:1")


def test_a_refused_password_is_exit_2_and_never_shown(project: Path, pg_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wr0ng-Pa55word-" + "7" * 10
    monkeypatch.setenv("PGPASSWORD", wrong)
    text = failed(run_cli("--store", pg_url, "runs"), 2, "refused the login", "PGPASSWORD",
                  ".pgpass")
    assert wrong not in text
    with_url = pg_url.replace("promptctl@", f"promptctl:{wrong}@")
    monkeypatch.delenv("PGPASSWORD")
    result = run_cli("--store", with_url, "cache", "stats")
    text = failed(result, 2, "refused the login")
    assert wrong not in result.output and "Wr0ng" not in result.output


def test_a_missing_database_is_exit_2_with_createdb(project: Path, pg_url: str) -> None:
    url = pg_url.replace("/promptctl_test", "/no_such_db")
    failed(run_cli("--store", url, "runs"), 2, "no such database", "createdb")


def test_a_password_in_the_url_reaches_no_output_and_no_record(
        api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str,
        pg_cluster: Any) -> None:
    import psycopg

    from tests import pg

    root = write_echo_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    monkeypatch.delenv("PGPASSWORD")
    url = pg_url.replace("promptctl@", f"promptctl:{quote(pg.PASSWORD, safe='')}@")
    (root / "promptctl.yaml").write_text(f"store: '{url}'\n", encoding="utf-8")
    monkeypatch.delenv("PROMPTCTL_STORE")
    outputs = []
    run = eval_run("prompts/echo.yaml")
    for args in (["runs"], ["runs", "--json"], ["show", run["id"]], ["cache", "stats"],
                 ["cache", "stats", "--json"], ["show", "01nosuchrun"], ["history", "echo"]):
        result = run_cli(*args)
        outputs.append(result.output)
    stats = json.loads(invoke("cache", "stats", "--json").stdout)
    assert stats["store"] == pg_url and stats["entries"] == 5
    assert all(pg.PASSWORD not in text for text in outputs)
    assert any("01nosuchrun" in text for text in outputs)
    with psycopg.connect(pg_url, password=pg.PASSWORD) as conn:
        dump = json.dumps([conn.execute(f"SELECT * FROM {t}").fetchall()
                           for t in ("runs", "rows", "cache", "_migrations")], default=str)
    assert run["id"] in dump and pg.PASSWORD not in dump


def test_a_connection_lost_mid_run_is_exit_3_and_resume_finishes(
        api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_cluster: Any) -> None:
    import psycopg

    from tests import pg

    words = [f"word{i}" for i in range(12)]
    root = write_echo_project(tmp_path / "proj", words=words)
    monkeypatch.chdir(root)
    url = pg_cluster.new_schema()
    monkeypatch.setenv("PGPASSWORD", pg.PASSWORD)
    monkeypatch.setenv("PROMPTCTL_STORE", url)
    calls = {"n": 0}

    def cut_on_the_sixth(body: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 6:  # the server goes away in the middle of the run
            with psycopg.connect(pg_cluster.admin_url(), password=pg.PASSWORD,
                                 autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                             "application_name = 'promptctl' AND pid <> pg_backend_pid()")
        return "echo: " + body["messages"][-1]["content"]

    api.responder = cut_on_the_sixth
    result = run_cli("eval", "prompts/echo.yaml", "--concurrency", "1")
    failed(result, 3, "PostgreSQL store failed or is unreachable", "--resume")
    (run,) = json.loads(invoke("runs", "--json").stdout)["runs"]
    kept = len(json.loads(invoke("show", run["id"], "--json").stdout)["rows"])
    assert 0 < kept < len(words)
    finished = eval_run("--resume", run["id"])
    assert finished["n"] == len(words) and finished["errors"] == 0
    assert calls["n"] - 6 <= len(words) - kept


def test_a_statement_promptctl_got_wrong_stays_a_bug(pg_url: str) -> None:
    # Only the engine's failures become StoreErrors: a broken statement keeps its traceback.
    import psycopg

    from promptctl.store.postgres import storage_error as pg_error
    from promptctl.store.sqlite import storage_error as sqlite_error

    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.Error) as info:
        conn.execute("SELEC 1")
    assert sqlite_error(info.value, "x.db") is None
    with psycopg.connect(pg_url) as pconn, pytest.raises(psycopg.Error) as pinfo:
        pconn.execute("SELEC 1")
    assert pg_error(pinfo.value, "postgresql://h/db") is None
