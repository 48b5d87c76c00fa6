"""No password of a store URL in any message: short ones, common words, ones with "/" or "@"
in them (libpq quotes the whole URL, or the password alone), percent-encoded ones; and a
password that is an ordinary word does not mask that word in other text."""

from __future__ import annotations

import re
import socket
from urllib.parse import quote

import pytest

from promptctl import redact
from promptctl.store.urls import public_url, scrub
from tests import pg
from tests.helpers import run_cli

# (password, how it is written in the URL)
PASSWORDS = [
    ("postgres", "postgres"),
    ("a", "a"),
    ("p/ss@w:rd", "p/ss@w:rd"),  # unencoded: libpq cannot read it, and quotes the URL
    ("p/ss@w:rd", quote("p/ss@w:rd", safe="")),
    ("p%zzss", "p%zzss"),  # a broken percent-encoding: libpq quotes the password alone
    ("p ss", "p ss"),  # a space: libpq quotes it alone too
    ("x@y", "x%40y"),
    ("Zq7#longer-password", quote("Zq7#longer-password", safe="")),
]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections are refused


def leaked(output: str, password: str, written: str) -> list[str]:
    """The forms of the password found in `output` (where they are not part of a word)."""
    found = []
    for form in {password, written}:
        if len(form) > 2 and re.search(rf"(?<!\w){re.escape(form)}(?!\w)", output):
            found.append(form)
        for wrap in (f":{form}@", f'"{form}"', f"'{form}'", f"={form}", f" {form} "):
            if wrap in output:
                found.append(wrap)
    return found


def check_message(output: str, password: str, written: str) -> None:
    assert not leaked(output, password, written), output
    assert "P***SQL" not in output and "***ql://" not in output
    assert "PostgreSQL" in output, output


@pytest.mark.parametrize(("password", "written"), PASSWORDS)
def test_an_unreachable_server_never_shows_the_password(password: str, written: str,
                                                        echo_project: object) -> None:
    url = f"postgresql://someone:{written}@127.0.0.1:{closed_port()}/db"
    result = run_cli("--store", url, "runs")
    assert result.exit_code != 0
    check_message(result.stdout + result.stderr, password, written)
    assert "someone" in result.stderr  # the user is kept: it says which login was tried


@pytest.mark.parametrize(("password", "written"), PASSWORDS)
def test_a_wrong_password_on_a_real_server(password: str, written: str, echo_project: object,
                                           pg_cluster: pg.Cluster,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = pg_cluster.admin_url().replace("://", f"://{pg.USER}:{written}", 1).replace(
        f"{pg.USER}:{written}{pg.USER}@", f"{pg.USER}:{written}@", 1)
    assert url.startswith(f"postgresql://{pg.USER}:{written}@127.0.0.1:")
    result = run_cli("--store", url, "runs")
    assert result.exit_code != 0
    check_message(result.stdout + result.stderr, password, written)


def test_userinfo_is_cut_from_any_database_url_in_any_text() -> None:
    # Nothing registered: the place, not the value, says it is a password.
    assert not redact.active()
    for written in ("a", "postgres", "p/ss@w:rd", "x%40y"):
        text = f'failed: "postgresql://bob:{written}@db.internal:5432/runs?sslmode=require"'
        assert redact.redact(text) == \
            'failed: "postgresql://bob@db.internal:5432/runs?sslmode=require"'
    assert redact.redact("postgres://h/db?x=1") == "postgres://h/db?x=1"
    assert public_url("postgresql://u:p/ss@w:rd@h:1/db") == "postgresql://u@h:1/db"
    assert scrub("bad: host=h password=a dbname=x") == "bad: host=h password=*** dbname=x"
    assert scrub("bad: password='a b\\'c' user=u") == "bad: password=*** user=u"
    url = "postgresql://u:a@h/db"
    assert scrub('invalid token: "a", at a place', url) == 'invalid token: "***", at a place'


def test_a_common_word_password_masks_only_itself() -> None:
    redact.register("postgres")
    redact.register("password")
    text = ("the PostgreSQL store at postgresql://u@h/db; the postgres_fdw extension; "
            "passwords and Password: postgres")
    assert redact.redact(text) == ("the PostgreSQL store at postgresql://u@h/db; the "
                                   "postgres_fdw extension; passwords and Password: ***")
    # A piece of a secret is masked when it holds a digit or a symbol, never a run of letters.
    redact.register("postgres-9f3k2")
    assert redact.redact("PostgreSQL, then gres-9f, then postgres") == \
        "PostgreSQL, then ***, then ***"
