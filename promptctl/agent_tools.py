"""An agent's tools as code: the project Python function behind each declared tool
(`tool: ../tools/calc.py:add`), loaded like a custom scorer, or a read-only query of a project
SQLite file (`sql: {database: ../data/shop.sqlite}`: the model writes the query, run by
`step_tools`' runner as a pipeline's sql step is); and one call of it run with a timeout, its
result (or why there is none) made the text the model is sent back.

User code cannot end a run: an exception, a `sys.exit()`, a call that outlasts its timeout or
a result that is not JSON is that call's error result, which the model reads and the run
counts as a tool error.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl.errors import InputError
from promptctl.files import MiB, Reference, project_path, project_root, quote, read_file
from promptctl.metrics.custom import error_text, line_raised, load_function, user_fault
from promptctl.step_tools import SqlStep, StepFailure

MAX_TOOL_BYTES = 1 * MiB
# The longest result text sent back to the model (and kept in the row).
MAX_RESULT_CHARS = 20_000
DEFAULT_TOOL_TIMEOUT = 10.0
_FILE_FUNCTION = re.compile(r"(?P<file>.+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)")

ToolFn = Callable[..., Any]


@dataclass(frozen=True)
class CallResult:
    """One executed call: the text sent back to the model, the error when the call failed
    (an exception, a timeout, a result that is not JSON), and how long it took."""

    content: str
    error: str | None
    ms: float


@dataclass
class ToolImpl:
    """The implementation of one declared tool: `FILE.py:FUNCTION`, relative to the agent
    file's folder and inside the project; loaded (run) only when a row needs it."""

    name: str
    spec: str
    agent_path: Path
    line: int | None
    file: Path = field(init=False)
    function: str = field(init=False)
    _fn: ToolFn | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        found = _FILE_FUNCTION.fullmatch(self.spec)
        if found is None:
            raise InputError(f"tool: of {self.name} is {quote(self.spec, 80)}, not FILE.py:FUNCTION",
                             file=self.agent_path, line=self.line,
                             fix="e.g. tool: ../tools/calc.py:add (relative to this file)")
        self.file = project_path(found["file"], self.agent_path.parent)
        self.function = found["function"]

    def load(self) -> ToolFn:
        """The function, loaded once; an InputError names the file and line at fault."""
        if self._fn is not None:
            return self._fn
        ref = Reference(self.agent_path, self.line, "tool")
        source = read_file(self.file, what="tool", max_bytes=MAX_TOOL_BYTES,
                           root=project_root(self.agent_path), ref=ref)
        fn: ToolFn = load_function(
            source, self.file, self.function, what="tool file", module_prefix="promptctl_tool",
            naming_file=self.agent_path, line=self.line, missing="the tool file has no function",
            signature="...", load_fix="fix the module so that importing it runs cleanly")
        self._fn = fn
        return fn


@dataclass
class SqlToolImpl:
    """A declared tool answered by one read-only query of a SQLite file of the project: the
    model passes the SQL text as the argument `query`, and the rows (each a mapping column ->
    value) go back as JSON. A write, ATTACH or PRAGMA is refused and is the call's error."""

    name: str
    runner: SqlStep
    agent_path: Path
    line: int | None

    @property
    def file(self) -> Path:
        return self.runner.database

    @property
    def version(self) -> str:
        """The database's sha256 (of the committed bytes when read at a commit)."""
        return self.runner.version

    def load(self) -> ToolFn:
        return self.query

    def query(self, query: str) -> list[dict[str, Any]]:
        if not isinstance(query, str) or not query.strip():
            raise StepFailure("the query is empty")
        return self.runner.query(query)


AnyToolImpl = ToolImpl | SqlToolImpl


def result_text(value: Any) -> str:
    """A tool's return value as the text the model reads: a string as it is, anything else
    as JSON; TypeError/ValueError when it has no JSON form."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"


def _in_thread(fn: ToolFn, arguments: dict[str, Any]) -> asyncio.Future[Any]:
    """`fn(**arguments)` on a daemon thread of its own: a call that never returns is left
    behind at its timeout without holding a worker of the event loop's pool or the exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def run() -> None:
        try:
            value = fn(**arguments)
        except BaseException as exc:  # noqa: BLE001 - user code: its error is the call's result
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, value)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the run ended meanwhile (a call left behind at its timeout)
            pass

    threading.Thread(target=run, name="promptctl-tool", daemon=True).start()
    return future


async def call_tool(impl: AnyToolImpl, arguments: dict[str, Any], timeout: float) -> CallResult:
    """Run one call; never raises for what the tool does (only for an interrupt)."""
    start = time.perf_counter()

    def done(content: str, error: str | None) -> CallResult:
        return CallResult(content, error, round((time.perf_counter() - start) * 1000, 3))

    fn = impl.load()
    try:
        value = await asyncio.wait_for(_in_thread(fn, arguments), timeout)
    except TimeoutError:
        error = f"the tool did not return within {timeout:g} s"
        return done(f"error: {error}", error)
    except StepFailure as exc:  # a query refused, failed or too large: its message says why
        return done(f"error: {exc}", str(exc))
    except BaseException as exc:
        if not user_fault(exc):
            raise
        line = line_raised(exc, str(impl.file))
        error = error_text(exc) + (f" ({impl.file.name}:{line})" if line else "")
        return done(f"error: {error}", error)
    try:
        return done(result_text(value), None)
    except (TypeError, ValueError, RecursionError):
        error = f"the tool returned a {type(value).__name__}, which is not JSON-serialisable"
        return done(f"error: {error}", error)
