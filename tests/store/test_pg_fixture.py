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


def test_cli_tests_that_open_the_sqlite_file_stay_on_sqlite() -> None:
    assert pg.runs_on_both("/x/tests/cli/test_runs.py", "def test_a(api):\n    invoke('runs')")
    assert not pg.runs_on_both("/x/tests/cli/test_runs.py", "sqlite3.connect(store_db(tmp_path))")
    assert not pg.runs_on_both("/x/tests/cli/test_validate.py", "def test_a(): pass")
    assert not pg.runs_on_both("/x/tests/test_runs.py", "def test_a(): pass")
