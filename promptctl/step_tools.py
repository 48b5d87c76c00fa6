"""The steps of a pipeline that run code instead of asking a model: `sql:` (one read-only
query of a SQLite file of the project) and `tool:` (a Python function of the project,
`FILE.py:FUNCTION`, called with the step's rendered input as keyword arguments).

They are deterministic code: never cached, never sent to a model. Each runs under a time
limit and gives a JSON value as its answer (a query: its rows, each a mapping column -> value;
a function: what it returned). What goes wrong while one runs (a write the database refuses,
an exception, a time limit, a value JSON cannot hold) is that step's error, a message naming
where; it never ends the run. A `SystemExit` raised by a tool is its error too (see
`metrics.custom.user_fault`, shared with custom scorers).

A database is opened read-only three ways over: a `mode=ro` URI, `PRAGMA query_only`, and an
authorizer that allows reading and nothing else (no ATTACH, no PRAGMA, no writes), so a query
a model wrote cannot change the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl.errors import InputError, display_path
from promptctl.files import (
    MiB,
    Reference,
    committed_files,
    is_inside,
    project_path,
    quote,
    read_file,
)
from promptctl.metrics.custom import error_text, load_function, user_fault, where_raised

DEFAULT_SQL_TIMEOUT = 5.0
DEFAULT_TOOL_TIMEOUT = 10.0
# Rows one query may give; more is the step's error (not a silent truncation: an answer
# built on the first thousand rows of a larger result would be wrong without saying so).
DEFAULT_MAX_ROWS = 1000
MAX_DATABASE_BYTES = 256 * MiB
MAX_TOOL_BYTES = 1 * MiB
# A step's answer is stored with its row and read by the steps after it: a query or a
# function that gives more (as JSON text) is the step's error. One text or blob value of a
# query is at most MAX_VALUE_BYTES (SQLite's own length limit, set per connection).
MAX_ANSWER_CHARS = 8 * MiB
MAX_VALUE_BYTES = 1 * MiB
# How many SQLite virtual-machine instructions run between two looks at the clock.
_PROGRESS_STEPS = 1000
_FILE_FUNCTION = re.compile(r"(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")
# What a query may do: read tables and columns, call functions, recurse in a CTE.
_ALLOWED_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                              getattr(sqlite3, "SQLITE_RECURSIVE", 33)})


class StepFailure(Exception):
    """A tool or SQL step that gave no answer: the message is the step's error."""


def file_sha256(path: Path, max_bytes: int) -> str:
    """The sha256 of a file read in pieces (a database may be large), or "unreadable"."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            total = 0
            while chunk := f.read(MiB):
                total += len(chunk)
                if total > max_bytes:
                    return "too-large"
                digest.update(chunk)
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def _authorize(action: int, *_: Any) -> int:
    """The authorizer of a query: reading only."""
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def _check_size(value: Any, what: str) -> str:
    """`value` as JSON text; StepFailure when it is longer than a step's answer may be."""
    text = json.dumps(value, allow_nan=False)
    if len(text) > MAX_ANSWER_CHARS:
        raise StepFailure(f"{what} is {len(text):,} characters as JSON, more than a step's "
                          f"answer may be ({MAX_ANSWER_CHARS:,})")
    return text


def _json_value(value: Any) -> Any:
    """A column's value as JSON holds it: a blob as its hex text."""
    return value.hex() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class SqlStep:
    """`sql: {database: FILE, query: TEMPLATE}`: the query runs read-only on the file.

    `snapshot` holds the database's bytes when the pipeline was read from a commit
    (`eval --ref`, the base side of `check`): queries then run on that version, in memory."""

    database: Path
    database_rel: str
    timeout: float = DEFAULT_SQL_TIMEOUT
    max_rows: int = DEFAULT_MAX_ROWS
    kind: str = "sql"
    snapshot: bytes | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"sql:{self.database_rel}"

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.database,)

    @property
    def version(self) -> str:
        if self.snapshot is not None:
            return hashlib.sha256(self.snapshot).hexdigest()
        return file_sha256(self.database, MAX_DATABASE_BYTES)

    def check(self) -> None:
        """Nothing to load: the file was checked when the pipeline was read."""

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.snapshot is not None:
                conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                conn.deserialize(self.snapshot)
                return conn
            uri = f"{self.database.resolve().as_uri()}?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, check_same_thread=False,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise StepFailure(f"cannot open {self.database_rel} read-only: {exc}") from None

    def query(self, sql: str) -> list[dict[str, Any]]:
        """The query's rows; StepFailure says why there are none."""
        conn = self._connect()
        try:
            conn.execute("PRAGMA query_only=ON")
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
            conn.set_authorizer(_authorize)
            deadline = time.monotonic() + self.timeout
            conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0,
                                      _PROGRESS_STEPS)
            try:
                cursor = conn.execute(sql)
                rows = cursor.fetchmany(self.max_rows + 1)
            except sqlite3.Error as exc:
                if time.monotonic() > deadline:
                    raise StepFailure(f"the query ran past its time limit of {self.timeout:g} s "
                                      "and was stopped") from None
                if "not authorized" in str(exc):
                    raise StepFailure(f"the query was refused: {exc} (a query of the database "
                                      "may only read: no writes, ATTACH or PRAGMA)") from None
                raise StepFailure(f"the query failed: {exc}") from None
            if len(rows) > self.max_rows:
                raise StepFailure(f"the query gave more than {self.max_rows:,} rows (the step's "
                                  "max_rows); narrow it or raise max_rows")
            names = [d[0] for d in cursor.description or ()]
            out = [{n: _json_value(v) for n, v in zip(names, row, strict=True)} for row in rows]
            _check_size(out, "the query's answer")
            return out
        finally:
            conn.close()

    async def run(self, inputs: Mapping[str, Any]) -> Any:
        sql = inputs.get("query")
        if not isinstance(sql, str) or not sql.strip():
            raise StepFailure("the query rendered empty")
        # The progress handler stops the query at its time limit, so the thread ends.
        return await asyncio.to_thread(self.query, sql)


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


def _call(fn: Callable[..., Any], inputs: Mapping[str, Any]) -> _Outcome:
    try:
        return _Outcome(value=fn(**inputs))
    except BaseException as exc:  # noqa: BLE001 - the user's code; see user_fault
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _Outcome(error=exc)


def _in_thread(fn: Callable[..., Any], inputs: Mapping[str, Any]) -> asyncio.Future[_Outcome]:
    """`fn(**inputs)` in a daemon thread of its own. A Python thread cannot be killed: a tool
    that outruns its time limit is left running, and being a daemon thread it neither holds
    up the run (the default executor's threads are joined when the event loop closes) nor
    keeps the process from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_Outcome] = loop.create_future()

    def deliver(outcome: _Outcome) -> None:
        if not future.done():
            future.set_result(outcome)

    def work() -> None:
        try:
            outcome = _call(fn, inputs)
        except BaseException as exc:  # noqa: BLE001 - a Ctrl-C in the tool's thread
            outcome = _Outcome(error=exc)
        try:
            loop.call_soon_threadsafe(deliver, outcome)
        except RuntimeError:  # the loop closed while the tool ran past its time limit
            pass

    threading.Thread(target=work, name="promptctl-tool", daemon=True).start()
    return future


@dataclass(eq=False)
class ToolStep:
    """`tool: FILE.py:FUNCTION`: the project's function, loaded like a custom scorer."""

    spec: str
    file: Path
    file_rel: str
    function: str
    naming_file: Path
    line: int | None
    root: Path
    timeout: float = DEFAULT_TOOL_TIMEOUT
    argument_names: tuple[str, ...] = ()
    # The file's bytes, read when the pipeline is read (from the work tree, or from the
    # commit it was read from): what is run and what the version covers. Not run until
    # `load`.
    source: bytes = b""
    kind: str = "tool"
    _fn: Callable[..., Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def parse(cls, spec: str, naming_file: Path, line: int | None, root: Path, *,
              timeout: float, argument_names: tuple[str, ...], rel: Callable[[Path], str]
              ) -> ToolStep:
        found = _FILE_FUNCTION.fullmatch(spec.strip())
        if found is None:
            raise InputError(f"tool {quote(spec, 80)} is not FILE.py:FUNCTION", file=naming_file,
                             line=line, fix="e.g. tool: ../tools/calc.py:add (relative to this "
                             "file)")
        path = project_path(found["file"], naming_file.parent)
        source = read_file(path, what="tool", max_bytes=MAX_TOOL_BYTES, root=root,
                           ref=Reference(naming_file, line, "tool"))
        return cls(spec.strip(), path, rel(path), found["function"], naming_file, line, root,
                   timeout, argument_names, source)

    @property
    def label(self) -> str:
        return f"tool:{self.file_rel}:{self.function}"

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.file,)

    @property
    def version(self) -> str:
        return hashlib.sha256(self.source).hexdigest()

    def check(self) -> None:
        """Load the function and check it takes the step's input (validate, --dry-run, run)."""
        fn = self.load()
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        try:
            signature.bind(**dict.fromkeys(self.argument_names))
        except TypeError as exc:
            code = getattr(fn, "__code__", None)
            raise InputError(f"the tool {self.function}{signature} cannot be called with the "
                             f"step's input ({', '.join(self.argument_names) or 'none'}): {exc}",
                             file=self.file, line=getattr(code, "co_firstlineno", None),
                             fix=f"make the step's input: keys the parameters of {self.function}"
                             ) from None

    def load(self) -> Callable[..., Any]:
        with self._lock:
            if self._fn is None:
                self._fn = self._load()
            return self._fn

    def _load(self) -> Callable[..., Any]:
        fn: Callable[..., Any] = load_function(
            self.source, self.file, self.function, what="tool", module_prefix="promptctl_tool",
            naming_file=self.naming_file, line=self.line,
            missing=f"the tool file {self.file.name} has no function", signature="...",
            load_fix="fix the module so that importing it runs cleanly (a tool module must not "
            "call sys.exit or raise)", who="the tool")
        return fn

    def _failure(self, exc: BaseException) -> StepFailure:
        where = where_raised(exc, str(self.file))
        text = error_text(exc, "the tool")
        return StepFailure(f"{text} (at {where})" if where else text)

    async def run(self, inputs: Mapping[str, Any]) -> Any:
        fn = self.load()
        try:
            async with asyncio.timeout(self.timeout):
                if inspect.iscoroutinefunction(fn):
                    outcome = await self._await(fn(**inputs))
                else:
                    outcome = await _in_thread(fn, inputs)
                    if outcome.error is None and inspect.isawaitable(outcome.value):
                        outcome = await self._await(outcome.value)
        except TimeoutError:
            raise StepFailure(f"timed out after {self.timeout:g} s") from None
        if outcome.error is not None:
            if isinstance(outcome.error, KeyboardInterrupt):
                raise outcome.error
            raise self._failure(outcome.error)
        try:
            text = _check_size(outcome.value, "the tool's return value")
        except StepFailure:
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            raise StepFailure(f"the tool returned a {type(outcome.value).__name__}, which is not "
                              f"JSON-serialisable ({exc})") from None
        except BaseException as exc:  # noqa: BLE001 - a user type's own hooks
            if not user_fault(exc):
                raise
            raise self._failure(exc) from None
        return json.loads(text)

    @staticmethod
    async def _await(awaitable: Any) -> _Outcome:
        try:
            return _Outcome(value=await awaitable)
        except BaseException as exc:  # noqa: BLE001 - see user_fault
            if not user_fault(exc):
                raise
            return _Outcome(error=exc)


StepTool = SqlStep | ToolStep


def check_database(path: Path, root: Path, naming_file: Path, line: int | None) -> None:
    """The database a sql step names: a regular file inside the project, of sane size."""
    fail = Reference(naming_file, line, "database")
    shown = quote(display_path(path), 80)
    if not is_inside(path, root):
        raise InputError(f"the database {shown} lies outside the project (the project root is "
                         f"{root})", file=fail.file, line=fail.line,
                         fix="keep the database inside the project and name it relative to this "
                         "file")
    try:
        st = os.stat(os.path.realpath(path))
    except OSError:
        raise InputError(f"the database {shown} was not found", file=fail.file, line=fail.line,
                         fix="check the path (it is relative to the pipeline file's folder)"
                         ) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"the database {shown} is not a regular file", file=fail.file,
                         line=fail.line, fix="name a SQLite database file")
    if st.st_size > MAX_DATABASE_BYTES:
        raise InputError(f"the database {shown} is larger than {MAX_DATABASE_BYTES // MiB} MiB",
                         file=fail.file, line=fail.line, fix="query a smaller database")


def sql_runner(database: Path, database_rel: str, root: Path, naming_file: Path,
               line: int | None, timeout: float = DEFAULT_SQL_TIMEOUT,
               max_rows: int = DEFAULT_MAX_ROWS) -> SqlStep:
    """The read-only query runner of the database a file names (a pipeline's sql step, an
    agent's sql tool): the file checked in the work tree, or, when the naming file is read at
    a commit (`eval --ref`, the base side of `check`), that commit's bytes, queried in memory."""
    snapshot = None
    if committed_files() is not None:
        snapshot = read_file(database, what="database", max_bytes=MAX_DATABASE_BYTES, root=root,
                             ref=Reference(naming_file, line, "database"))
    else:
        check_database(database, root, naming_file, line)
    return SqlStep(database, database_rel, timeout, max_rows, snapshot=snapshot)
