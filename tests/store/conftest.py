"""The store tests run against both back-ends: `any_url` and `any_store` are parametrised.
`project` is the echo project with no store in the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promptctl.store import Store, open_store
from tests.fakeserver import FakeOpenAI
from tests.helpers import write_echo_project


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new store: a SQLite file, or a fresh schema on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 's' / 'results.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def any_store(any_url: str) -> Iterator[Store]:
    store = open_store(any_url)
    yield store
    store.close()


@pytest.fixture
def project(api: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The echo project as the current directory, the fake server as the endpoint, and no
    PROMPTCTL_STORE: the store is the default .promptctl/results.db, or what a test chooses."""
    root = write_echo_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    monkeypatch.delenv("PROMPTCTL_STORE")
    return root
