"""What every command shares: error handling, consoles, opening the store."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer

from promptctl.errors import PromptctlError

if TYPE_CHECKING:
    from promptctl.config import Config
    from promptctl.store import Store

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int) -> typer.Exit:
    """Print an error on stderr and return the Exit to raise."""
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


def project(start: Path | None = None) -> Config:
    """Config of the project containing `start` (default: the current directory).

    The root is the git work tree containing `start`, else the current directory
    (SPEC section 1), never the directory of the prompt file itself.
    """
    from promptctl.config import find_root, load_config

    root = find_root(start or Path.cwd())
    if not (root / ".git").exists():
        root = Path.cwd().resolve()
    return load_config(root)


def open_project_store(config: Config, *, create: bool = True) -> Store:
    """The project's store: `promptctl --store URL` > $PROMPTCTL_STORE > promptctl.yaml >
    default. With `create=False` (commands that only read) a store that does not exist yet
    is not made: an empty one stands in for it."""
    from promptctl.cli.app import root_options
    from promptctl.store import open_store

    return open_store(config.store_url(root_options["store"]), create=create)


def is_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
