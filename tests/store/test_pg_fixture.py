"""The test server's rules: skipped on a developer's machine without PostgreSQL, a failure
under CI=true; and which CLI tests run a second time on PostgreSQL."""

from __future__ import annotations

import pytest

from tests import pg


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception),
                                              ("", pytest.skip.Exception)])
def test_a_missing_server_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str,
                                                        outcome: type[BaseException]) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no initdb"):
        pg.unavailable("no initdb")


def test_the_markers_decide_which_tests_run_on_postgresql_too() -> None:
    """A test of a `both_stores` module runs on both stores; one marked `sqlite_only` (it
    opens the SQLite file itself) once; a test of another module once."""
    import subprocess
    import sys

    from tests.helpers import REPO

    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "tests/cli/test_cache.py",
                          "tests/cli/test_validate.py"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    ids = set(out.split())
    assert {"tests/cli/test_cache.py::test_no_cache_writes_nothing[sqlite]",
            "tests/cli/test_cache.py::test_no_cache_writes_nothing[postgresql]"} <= ids
    assert "tests/cli/test_cache.py::test_stats_counts_the_entries_a_run_wrote" in ids
    assert not any("test_stats_counts_the_entries_a_run_wrote[" in i for i in ids)
    assert not any(i.startswith("tests/cli/test_validate.py") and "postgresql" in i for i in ids)
