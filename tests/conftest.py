"""Shared fixtures: every test gets its own store and config, and no real API key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import helpers, pg
from tests.helpers import use_fake_openai, write_echo_project

if TYPE_CHECKING:
    # Not imported at run time: a plugin module imported before pytest registers it below
    # is not assertion-rewritten (and pytest warns).
    from tests.fakeserver import FakeOpenAI

# Modules whose fixtures every test may ask for by name, without importing them (pytest reads
# this list only in the root conftest.py): fake_openai and server from fakeserver; repo (the
# `check` repository) from checkrepo; project and judged_api (the judged echo project) from
# judgekit. A test module, or a directory's conftest.py, that defines a fixture of the same
# name overrides it there (tests/providers and tests/store have a `project` of their own).
pytest_plugins = ["tests.fakeserver", "tests.checkrepo", "tests.judgekit"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    pg.parametrize(metafunc)


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """The store `isolated` sets up: sqlite, or postgresql for the CLI tests run on both."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_kind: str,
             request: pytest.FixtureRequest) -> Iterator[Path]:
    """A private store and no inherited OpenAI settings, so tests never touch a real account."""
    monkeypatch.setenv("PROMPTCTL_STORE", f"sqlite:///{tmp_path / 'store' / 'results.db'}")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PROMPTCTL_CONFIG", "OPENAI_ORG_ID",
                "OPENAI_PROJECT_ID", "PGPASSWORD", "PGPASSFILE", "PGHOST",
                "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGOPTIONS"):
        monkeypatch.delenv(var, raising=False)
    if store_kind == "postgresql":
        monkeypatch.setenv("PROMPTCTL_STORE", request.getfixturevalue("pg_url"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    yield tmp_path
    from promptctl import redact

    redact.forget_all()  # secrets registered by one test must not mask another's output


@pytest.fixture(autouse=True)
def _no_stray_cli_processes() -> Iterator[None]:
    """A failed assertion must not leave an eval subprocess running."""
    yield
    while helpers.cli_processes:
        proc = helpers.cli_processes.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture
def api(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The fake server as the OpenAI endpoint: OPENAI_BASE_URL points at it, with a dummy key.

    A module whose tests need more (a project to run in, a responder) overrides this with a
    fixture of the same name that asks for it; one that looks for its own key in the output
    sets the endpoint up with `use_fake_openai`."""
    return use_fake_openai(monkeypatch, fake_openai, "sk-test-api-9d8c7b6a5f4e")


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch jobs polled without waiting; the batch tests use it for every test
    (`pytest.mark.usefixtures("quick_polls")`)."""
    monkeypatch.setenv("PROMPTCTL_BATCH_POLL", "0")


@pytest.fixture
def echo_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/proj with the echo prompt and its five-row eval set, and the current directory."""
    root = write_echo_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.Cluster]:
    """The session's PostgreSQL server (skipped without one, a failure under CI=true)."""
    cluster = pg.Cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: pg.Cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """A store URL of a new, empty schema on the test server; its password in PGPASSWORD."""
    monkeypatch.setenv("PGPASSWORD", pg.PASSWORD)
    return pg_cluster.new_schema()
