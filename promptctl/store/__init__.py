"""The results store: runs, their rows and the completion cache."""

from __future__ import annotations

from promptctl.errors import InputError
from promptctl.store.sqlite import SQLiteStore, Store, utcnow

__all__ = ["SQLiteStore", "Store", "open_store", "utcnow"]


def open_store(url: str) -> Store:
    """Open (creating and migrating as needed) the store at `url`."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    if url.startswith(("postgresql://", "postgres://")):
        raise InputError("PostgreSQL stores are not supported yet",
                         fix="use store: sqlite:///.promptctl/results.db in promptctl.yaml")
    raise InputError(f"unknown store URL {url!r}",
                     fix="use sqlite:///PATH (relative to the project root) or an absolute path")
