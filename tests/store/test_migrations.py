"""Append-only migrations per dialect: a blank database and one left at any older step end on
the same schema, with the data kept."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from promptctl.errors import InputError
from promptctl.store import SQLiteStore, StoreError, open_store
from promptctl.store.migrations import MIGRATIONS, POSTGRESQL, SQLITE

EXPECTED_TABLES = {"_migrations", "runs", "rows", "cache"}
OLD_RUN = ("INSERT INTO runs (id, created_at, status, prompt_name, prompt_path, prompt_version, "
           "prompt_source, model, endpoint, params, n_planned) VALUES ('01old', "
           "'2024-01-01T00:00:00.000Z', 'complete', 'p', 'prompts/p.yaml', 'v', 'src', 'm', "
           "'openai', '{}', 0)")


def test_both_dialects_have_the_same_steps_in_order() -> None:
    assert set(MIGRATIONS) == {"sqlite", "postgresql"}
    for steps in MIGRATIONS.values():
        names = [name for name, _ in steps]
        assert len(names) == len(set(names))
        assert names == sorted(names)  # mNNN_ prefixes keep the order readable
    assert [n for n, _ in SQLITE] == [n for n, _ in POSTGRESQL]


def test_the_shipped_sqlite_step_is_unchanged() -> None:
    # m001 shipped: stores in the field were made by exactly this text.
    name, sql = SQLITE[0]
    assert name == "m001_initial"
    conn = sqlite3.connect(":memory:")
    conn.executescript(sql)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    assert columns[-1] == "options" and len(columns) == 22
    assert [r[1] for r in conn.execute("PRAGMA table_info(rows)")][-1] == "created_at"


# -- SQLite -----------------------------------------------------------------------------------


def schema(path: Path) -> dict[str, str]:
    """name -> normalised CREATE statement of every table and index."""
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                             "AND name NOT LIKE 'sqlite_%'").fetchall()
    finally:
        conn.close()
    return {name: " ".join(sql.split()) for name, sql in found}


def applied(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]
    finally:
        conn.close()


def test_blank_sqlite_database_ends_on_the_expected_tables(tmp_path: Path) -> None:
    path = tmp_path / "blank.db"
    SQLiteStore(path).close()
    tables = {name for name, sql in schema(path).items() if sql.startswith("CREATE TABLE")}
    assert tables == EXPECTED_TABLES
    assert "runs_prompt" in schema(path)
    assert applied(path) == [name for name, _ in SQLITE]


def test_opening_twice_applies_nothing_new(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    first = SQLiteStore(path)
    before = schema(path)
    assert first.migrate() == []
    first.close()
    second = SQLiteStore(path)
    assert second.migrate() == []
    second.close()
    assert schema(path) == before
    assert applied(path) == [name for name, _ in SQLITE]


@pytest.mark.parametrize("done", range(len(SQLITE) + 1))
def test_an_old_sqlite_database_is_brought_up_to_date(tmp_path: Path, done: int) -> None:
    blank = tmp_path / "blank.db"
    SQLiteStore(blank).close()

    # An "old" database: the first `done` steps applied by hand, as an older promptctl
    # would have left it, with a run in it.
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for name, sql in SQLITE[:done]:
        conn.executescript(sql)
        conn.execute("INSERT INTO _migrations VALUES (?, '2024-01-01T00:00:00.000Z')", (name,))
    if done:
        conn.execute(OLD_RUN)
    conn.commit()
    conn.close()

    store = SQLiteStore(old)
    assert store.migrate() == []
    if done:
        run = store.get_run("01old")
        assert run["prompt_name"] == "p"  # data survives
        assert run["kind"] == "prompt" and run["owner"] is None  # m002's defaults
    store.close()
    assert schema(old) == schema(blank)
    assert applied(old) == [name for name, _ in SQLITE]


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, it is a text file that is long enough " * 20)
    with pytest.raises(StoreError) as info:
        SQLiteStore(path)
    assert "not a promptctl SQLite file" in str(info.value)
    assert info.value.exit_code == 2
    assert info.value.fix is not None and "PROMPTCTL_STORE" in info.value.fix


def test_open_store_urls(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x' / 'r.db'}")
    assert isinstance(store, SQLiteStore)
    store.close()
    assert (tmp_path / "x" / "r.db").exists()
    with pytest.raises(InputError, match="unknown store URL"):
        open_store("mysql://localhost/db")


# -- PostgreSQL -------------------------------------------------------------------------------


def pg_schema(url: str) -> dict[str, Any]:
    """Tables with their columns (type, null, default, collation) and indexes of the URL's schema."""
    import psycopg

    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
            "column_default, collation_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position").fetchall()
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = "
                               "current_schema() ORDER BY indexname").fetchall()
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for table, *rest in columns:
        tables.setdefault(table, []).append(tuple(rest))
    # Index definitions name the schema: compare them without it.
    return {"tables": tables, "indexes": [(n, d.split(" ON ")[0]) for n, d in indexes]}


def pg_applied(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY applied_at, name")]


def test_blank_postgresql_schema_ends_on_the_expected_tables(pg_url: str) -> None:
    store = open_store(pg_url)
    assert store.migrate() == []  # the open did it all
    store.close()
    found = pg_schema(pg_url)
    assert set(found["tables"]) == EXPECTED_TABLES
    assert [n for n, _ in found["indexes"]] == [
        "_migrations_pkey", "cache_created", "cache_pkey", "rows_pkey", "runs_pkey", "runs_prompt"]
    # Keys compare byte-wise whatever the database's locale is.
    runs = {c[0]: c for c in found["tables"]["runs"]}
    assert runs["id"][5] == "C" and runs["kind"][4] == "'prompt'::text"
    assert sorted(pg_applied(pg_url)) == [name for name, _ in POSTGRESQL]


@pytest.mark.parametrize("done", range(len(POSTGRESQL) + 1))
def test_an_old_postgresql_schema_is_brought_up_to_date(pg_cluster: Any, pg_url: str,
                                                         done: int) -> None:
    import psycopg

    open_store(pg_url).close()
    blank = pg_schema(pg_url)
    old_url = pg_cluster.new_schema()
    with psycopg.connect(old_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        for name, sql in POSTGRESQL[:done]:
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement.encode())
            conn.execute("INSERT INTO _migrations VALUES (%s, '2024-01-01T00:00:00.000Z')", (name,))
        if done:
            conn.execute(OLD_RUN.encode())
    store = open_store(old_url)
    assert store.migrate() == []
    if done:
        run = store.get_run("01old")
        assert run["prompt_name"] == "p" and run["kind"] == "prompt"
    store.close()
    assert pg_schema(old_url) == blank
    assert sorted(pg_applied(old_url)) == [name for name, _ in POSTGRESQL]


OPEN_SCRIPT = """\
import sys
from promptctl.store import open_store
store = open_store(sys.argv[1])
store.create_run({"id": sys.argv[2], "created_at": "2026-01-01T00:00:00.000Z", "status": "complete",
                  "prompt_name": "p", "prompt_path": "p.yaml", "prompt_version": "v",
                  "prompt_source": "s", "model": "m", "endpoint": "e", "params": {}, "n_planned": 0})
print("ok", flush=True)
"""


def test_processes_opening_a_new_postgresql_store_at_once_migrate_it_once(pg_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_SCRIPT, pg_url, f"01p{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ)) for i in range(5)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [out.strip() for out, _ in results] == ["ok"] * 5, [err for _, err in results]
    assert sorted(pg_applied(pg_url)) == [name for name, _ in POSTGRESQL]
    store = open_store(pg_url)
    assert len(store.list_runs()) == 5
    store.close()
