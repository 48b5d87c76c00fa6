"""Shared fixtures: every test gets its own store and config, and no real API key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeserver import fake_openai  # noqa: F401  (re-exported fixture)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private store and no inherited OpenAI settings, so tests never touch a real account."""
    monkeypatch.setenv("PROMPTCTL_STORE", f"sqlite:///{tmp_path / 'store' / 'results.db'}")
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PROMPTCTL_CONFIG", "OPENAI_ORG_ID",
                "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    yield tmp_path
