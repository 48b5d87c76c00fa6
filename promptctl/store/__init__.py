"""The results store: runs, their rows and the completion cache, behind one interface.

Import the store only from here: `open_store`, `Store`, the record types, `utcnow`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptctl import install_command
from promptctl.errors import InputError
from promptctl.store.base import (
    RUN_ID_ALPHABET,
    CacheStats,
    KindTotals,
    RowRecord,
    RunRecord,
    ScoreColumns,
    Store,
    StoreError,
    StoreUnavailable,
    UsageColumns,
    is_run_id,
    utcnow,
)
from promptctl.store.empty import EmptyStore
from promptctl.store.sqlite import SQLiteStore
from promptctl.store.urls import public_url

if TYPE_CHECKING:
    from promptctl.store.postgres import PostgresStore

__all__ = ["RUN_ID_ALPHABET", "CacheStats", "KindTotals", "PostgresStore", "RowRecord", "RunRecord",
           "SQLiteStore", "ScoreColumns", "Store", "StoreError", "StoreUnavailable", "UsageColumns",
           "is_run_id",
           "open_store", "public_url", "utcnow"]

_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (creating and migrating as needed) the store at `url`.

    With `create=False` a store that does not exist yet is not made: an empty
    store that refuses writes stands in for it (read-only commands use this).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not create and path != ":memory:" and not Path(path).exists():
            return EmptyStore(path)
        return SQLiteStore(path)
    if url.startswith(_SCHEMES):
        try:
            from promptctl.store.postgres import PostgresStore
        except ImportError:
            raise InputError("a PostgreSQL store needs the psycopg package, which is not installed",
                             file=public_url(url),
                             fix=f"{install_command('postgres')} (or pip install "
                             "'psycopg[binary]')") from None
        store = PostgresStore(url, migrate=create)
        if not create:
            if not store.has_schema():
                store.close()
                return EmptyStore(store.location)
            store.migrate()
        return store
    raise InputError(f"unknown store URL {public_url(url)!r}",
                     fix="use sqlite:///PATH (relative to the project root), an absolute path, or "
                     "postgresql://USER@HOST[:PORT]/DB")


def __getattr__(name: str) -> Any:
    # The PostgreSQL back-end loads on first use: psycopg is an optional extra.
    if name == "PostgresStore":
        from promptctl.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'promptctl.store' has no attribute {name!r}")
