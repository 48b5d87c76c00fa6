"""Append-only migrations: a blank database and an old one end on the same schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from promptctl.errors import InputError
from promptctl.store import SQLiteStore, open_store
from promptctl.store.migrations import MIGRATIONS

EXPECTED_TABLES = {"_migrations", "runs", "rows", "cache"}


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


def test_migration_names_are_unique_and_ordered() -> None:
    names = [name for name, _ in MIGRATIONS]
    assert len(names) == len(set(names))
    assert names == sorted(names)  # mNNN_ prefixes keep the order readable


def test_blank_database_ends_on_the_expected_tables(tmp_path: Path) -> None:
    path = tmp_path / "blank.db"
    store = SQLiteStore(path)
    store.close()
    tables = {name for name, sql in schema(path).items() if sql.startswith("CREATE TABLE")}
    assert tables == EXPECTED_TABLES
    assert "runs_prompt" in schema(path)
    assert applied(path) == [name for name, _ in MIGRATIONS]


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
    assert applied(path) == [name for name, _ in MIGRATIONS]


@pytest.mark.parametrize("done", range(len(MIGRATIONS) + 1))
def test_an_old_database_is_brought_up_to_date(tmp_path: Path, done: int) -> None:
    blank = tmp_path / "blank.db"
    SQLiteStore(blank).close()

    # An "old" database: the first `done` migrations applied by hand, as an older
    # promptctl would have left it, with a run in it.
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for name, sql in MIGRATIONS[:done]:
        conn.executescript(sql)
        conn.execute("INSERT INTO _migrations VALUES (?, '2024-01-01T00:00:00.000Z')", (name,))
    if done:
        conn.execute(
            "INSERT INTO runs (id, created_at, status, prompt_name, prompt_path, prompt_version, "
            "prompt_source, model, endpoint, params, n_planned) VALUES ('01old', "
            "'2024-01-01T00:00:00.000Z', 'complete', 'p', 'prompts/p.yaml', 'v', 'src', 'm', "
            "'openai', '{}', 0)")
    conn.commit()
    conn.close()

    store = SQLiteStore(old)
    assert store.migrate() == []
    if done:
        assert store.get_run("01old")["prompt_name"] == "p"  # data survives
    store.close()
    assert schema(old) == schema(blank)
    assert applied(old) == [name for name, _ in MIGRATIONS]


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, it is a text file that is long enough " * 20)
    with pytest.raises(InputError) as info:
        SQLiteStore(path)
    assert "cannot open the results store" in str(info.value)
    assert info.value.fix is not None and "PROMPTCTL_STORE" in info.value.fix


def test_open_store_urls(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x' / 'r.db'}")
    assert isinstance(store, SQLiteStore)
    store.close()
    assert (tmp_path / "x" / "r.db").exists()
    with pytest.raises(InputError):
        open_store("mysql://localhost/db")
