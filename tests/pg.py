"""A throw-away PostgreSQL server for the tests.

`initdb` into a temporary directory, a free port on 127.0.0.1, password
authentication, stopped and deleted at the end of the session. initdb refuses
to run as root, so as root the cluster belongs to the `postgres` system user
that Debian's package creates. Each test gets a schema of its own
(`search_path` in the store URL), which costs a millisecond where a database
would cost a copy of the template.

Without PostgreSQL the tests that need it are skipped, except under CI=true,
where a missing server is a failure (.ci/run installs it).

A test runs a second time with a PostgreSQL store when it is marked `both_stores`,
usually for a whole module (`pytestmark = pytest.mark.both_stores`); a test in such a
module that opens the SQLite file itself is marked `sqlite_only` and runs once.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "promptctl"
DATABASE = "promptctl_test"
# redact masks every 6-character piece of a registered password, so it is made of
# characters that ids, hashes and words in test output never run six of: no digits, no
# lower case, no vowels.
PASSWORD = "".join(secrets.choice("BCDFGHJKMNPQRSTVWXZ") for _ in range(24)) + "#%"


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unavailable(reason: str) -> None:
    """Skip (a developer's machine) or fail (CI) for want of PostgreSQL."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


class Cluster:
    """A running server; `url(schema)` is a store URL without the password."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            unavailable("no initdb (apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            unavailable("psycopg is not installed (pip install -e '.[test]')")
        assert bindir is not None
        self.bindir = bindir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="promptctl-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb and postgres refuse root: the package's system user runs them.
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        if self.as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "scram-sha-256",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -F "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options,
                  "-w", "-t", "60", "start")
        atexit.register(self.stop)
        import psycopg

        with psycopg.connect(self.admin_url("postgres"), password=PASSWORD, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_user, str(self.bindir / tool), *args], capture_output=True,
                              text=True, cwd=self.dir, check=False)
        if done.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{tail}")

    def admin_url(self, database: str = DATABASE) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def url(self, schema: str | None = None) -> str:
        """The store URL of `schema` (none: the database's default search_path)."""
        base = self.admin_url()
        return base if schema is None else f"{base}?options=-csearch_path%3D{schema}"

    def new_schema(self) -> str:
        """A fresh, empty schema's store URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.admin_url(), password=PASSWORD, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the tests that also run against PostgreSQL ----------------------------------------------

BOTH_STORES = "both_stores"  # marker: the test runs with a SQLite store, then a PostgreSQL one
SQLITE_ONLY = "sqlite_only"  # marker: the test opens the SQLite file itself, despite BOTH_STORES


def parametrize(metafunc: pytest.Metafunc) -> None:
    """`store_kind` sqlite and postgresql for the tests marked `both_stores` (on the module,
    through `pytestmark`, or on the test) and not `sqlite_only`; nothing else decides."""
    if "store_kind" not in metafunc.fixturenames:
        return
    node = metafunc.definition
    if node.get_closest_marker(BOTH_STORES) and not node.get_closest_marker(SQLITE_ONLY):
        metafunc.parametrize("store_kind", ["sqlite", "postgresql"], indirect=True)
