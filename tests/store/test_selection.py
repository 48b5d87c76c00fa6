"""Which store a command opens (--store > $PROMPTCTL_STORE > promptctl.yaml > default), URLs
shown without passwords, and read-only commands that create nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptctl import redact
from promptctl.store import open_store, public_url
from promptctl.store.urls import url_secrets
from tests.helpers import eval_run, invoke, run_cli


@pytest.mark.parametrize(("url", "shown", "secrets"), [
    ("postgresql://ci@db.example.com/promptctl", "postgresql://ci@db.example.com/promptctl", []),
    ("postgresql://ci:s3cr%40t-word@db:5433/p", "postgresql://ci@db:5433/p", ["s3cr@t-word"]),
    # libpq takes a raw "#", "?" or ":" inside the password: it is still removed whole.
    ("postgresql://ci:pa#ss?wo:rd@db/p?sslmode=require", "postgresql://ci@db/p?sslmode=require",
     ["pa#ss?wo:rd"]),
    ("postgres://db/p?user=ci&password=hunter2hunter2&options=-csearch_path%3Dx",
     "postgres://db/p?user=ci&options=-csearch_path%3Dx", ["hunter2hunter2"]),
    ("postgresql://:only-a-password-here@db/p", "postgresql://db/p", ["only-a-password-here"]),
    ("sqlite:////abs/results.db", "/abs/results.db", []),
])
def test_urls_are_shown_without_passwords(url: str, shown: str, secrets: list[str]) -> None:
    assert public_url(url) == shown
    assert url_secrets(url) == secrets


def test_a_password_registered_from_a_url_is_masked_everywhere(tmp_path: Path) -> None:
    from promptctl.store.urls import register_url_secrets

    try:
        register_url_secrets("postgresql://ci:Another%2FSecret%2B99@db/p")
        assert redact.redact("echoed: Another/Secret+99.") == "echoed: ***."
        assert redact.redact("as typed: Another%2FSecret%2B99.") == "as typed: ***."
        assert public_url("postgresql://ci:Another%2FSecret%2B99@db/p") == "postgresql://ci@db/p"
    finally:
        redact.forget_all()


def test_store_flag_beats_the_environment_which_beats_the_file(project: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "promptctl.yaml").write_text("store: sqlite:///from-file.db\n", encoding="utf-8")
    in_file = eval_run("prompts/echo.yaml")
    assert (project / "from-file.db").exists()
    monkeypatch.setenv("PROMPTCTL_STORE", f"sqlite:///{tmp_path / 'env.db'}")
    in_env = eval_run("prompts/echo.yaml")
    flagged = f"sqlite:///{tmp_path / 'flag.db'}"
    on_flag = json.loads(invoke("--store", flagged, "eval", "prompts/echo.yaml", "--json").stdout)
    on_flag_id = on_flag["runs"][0]["id"]

    def ids(*args: str) -> list[str]:
        return [r["id"] for r in json.loads(invoke(*args, "runs", "--json").stdout)["runs"]]

    assert ids("--store", flagged) == [on_flag_id]
    assert ids() == [in_env["id"]]  # the flag held for its own command only
    monkeypatch.delenv("PROMPTCTL_STORE")
    assert ids() == [in_file["id"]]
    stats = json.loads(invoke("--store", flagged, "cache", "stats", "--json").stdout)
    assert stats["store"] == str(tmp_path / "flag.db")


def test_a_store_url_of_no_known_kind_is_exit_2(project: Path) -> None:
    result = run_cli("--store", "mysql://u:pw-secret-123@h/db", "runs")
    assert result.exit_code == 2 and "unknown store URL" in result.stderr
    assert "pw-secret-123" not in result.output and "mysql://u@h/db" in result.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["runs"], "no runs stored yet"),
    (["runs", "--json"], '"runs": []'),
    (["show", "01abc"], "no runs are stored yet"),
    (["history", "echo"], ""),
    (["cache", "stats"], "not created yet"),
    (["store", "export"], "exported 0 run(s)"),
])
def test_read_only_commands_in_a_fresh_project_create_nothing(project: Path, args: list[str],
                                                              says: str) -> None:
    result = run_cli(*args)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    assert says in result.output
    assert not (project / ".promptctl").exists()


def test_read_only_commands_create_no_tables_in_postgresql(project: Path, pg_url: str) -> None:
    import psycopg

    for args in (["runs"], ["cache", "stats"], ["history", "echo"]):
        assert run_cli("--store", pg_url, *args).exit_code == 0
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = current_schema()").fetchone()
    assert tables == (0,)
    store = open_store(pg_url, create=False)
    assert store.list_runs() == [] and store.cache_stats()["entries"] == 0
    store.close()
    open_store(pg_url).close()  # a writing command makes it
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = current_schema()").fetchone()
    assert tables == (4,)


def test_an_empty_store_refuses_writes(tmp_path: Path) -> None:
    from promptctl.store import StoreError

    store = open_store(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    with pytest.raises(StoreError, match="does not exist yet"):
        store.cache_put([("k", {"text": "x"})])
    assert store.cache_get("k") is None and store.run_totals("x")["eval"]["n"] == 0
    assert not (tmp_path / "none.db").exists()


def test_a_password_from_a_pgpass_file_is_used_and_masked(project: Path, pg_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import pg

    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:*:*:promptctl:{pg.PASSWORD.replace(':', chr(92) + ':')}\n",
                        encoding="utf-8")
    passfile.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    redact.forget_all()
    try:
        result = invoke("--store", pg_url, "runs", "--json")
        assert json.loads(result.stdout) == {"runs": []}
        # libpq found the password in the file; from now on it is masked wherever it shows.
        assert redact.redact(f"said {pg.PASSWORD}") == "said ***"
    finally:
        redact.forget_all()
