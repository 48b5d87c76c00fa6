"""The provider tests' project."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def project(echo_project: Path) -> Path:
    """The echo project (tmp_path/proj), the current directory."""
    return echo_project
