"""What every command shares: error handling, consoles, opening the store."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from promptctl.errors import PromptctlError

if TYPE_CHECKING:
    from promptctl.config import Config
    from promptctl.runs import BadRun
    from promptctl.store import Store

P = ParamSpec("P")
R = TypeVar("R")

# Options given before the command (`promptctl --store URL runs`), set afresh by every
# invocation's callback (cli.app); open_project_store reads the store URL here.
root_options: dict[str, str | None] = {"store": None}


def fail(message: str, code: int) -> typer.Exit:
    """Print an error on stderr and return the Exit to raise. The message may quote a server,
    a file or a model: the console shows its control characters as escapes and masks secrets."""
    from promptctl.render.terminal import console

    con = console(stderr=True)
    con.print(f"[bold red]error:[/] {_escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn PromptctlError into its message and exit code; anything else is a bug."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except PromptctlError as exc:
            raise fail(str(exc), exc.exit_code) from None

    return wrapper


def project() -> Config:
    """The project of the current directory (see `promptctl.project`)."""
    from promptctl.project import open_project

    return open_project()


def open_project_store(config: Config, *, create: bool = True) -> Store:
    """The project's store: `promptctl --store URL` > $PROMPTCTL_STORE > promptctl.yaml >
    default. With `create=False` (commands that only read) a store that does not exist yet
    is not made: an empty one stands in for it."""
    from promptctl.store import open_store

    store = open_store(config.store_url(root_options["store"]), create=create)
    store.on_malformed = _malformed_warning()
    return store


def _malformed_warning() -> Callable[[BadRun], None]:
    """Warn on stderr, once per run or row, of each malformed one a read leaves out."""
    seen: set[tuple[str, str | None]] = set()

    def warn(problem: BadRun) -> None:
        if (problem.run_id, problem.row) in seen:
            return
        seen.add((problem.run_id, problem.row))
        from promptctl.render.terminal import console
        from promptctl.runs import CHECK_FIX

        what = f"run {problem.run_id}" + (f", {problem.row}," if problem.row else "")
        console(stderr=True).print(
            f"[yellow]warning:[/] {_escape(what)} is malformed and was left out: "
            f"{_escape(problem.problem)} ({_escape(CHECK_FIX)})", soft_wrap=True)

    return warn


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
