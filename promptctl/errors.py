"""Errors that tell the user what went wrong and what to do about it.

The CLI catches only `PromptctlError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

# Exit codes, the one list of them: what CI and scripts read.
EXIT_OK = 0
EXIT_GATE = 1  # a verdict: a `check` gate failed, or `store check` found malformed runs
EXIT_INPUT = 2  # a prompt, eval set, config or command line that cannot be used
EXIT_PROVIDER = 3  # the model server or the store failed in a way no retry mends
EXIT_BUG = 4  # a crash: a bug in promptctl, never mistaken for a verdict
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

# Paths in messages are shown relative to the project root (set once the project is known),
# normalised: `prompts/../evalsets/x.jsonl` is `evalsets/x.jsonl`.
_display_root: Path | None = None


def set_display_root(root: Path | None) -> None:
    """Show paths relative to `root` from now on (the project root of this command)."""
    global _display_root
    _display_root = root.resolve() if root is not None else None


def display_path(path: str | Path) -> str:
    """`path` as every message shows it: normalised, relative to the project root when it
    lies inside it, else absolute."""
    text = str(path)
    if "://" in text or not text:
        return text
    absolute = Path(os.path.normpath(os.path.abspath(text)))
    for base in (_display_root, Path.cwd()):
        if base is None:
            continue
        try:
            rel = absolute.relative_to(base)
        except ValueError:
            continue
        return rel.as_posix() or "."
    return absolute.as_posix()


def did_you_mean(given: object, choices: Iterable[object]) -> str:
    """The start of a fix for a name that is not one of `choices`: "did you mean 'x'? " when
    one is close to it (difflib's ratio of at least 0.6), else "". Every unknown key, metric,
    step, endpoint setting and prompt name is answered this way."""
    close = difflib.get_close_matches(str(given), [str(c) for c in choices], n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class PromptctlError(Exception):
    """Base class: a message, where it happened (file, line) and the fix."""

    exit_code = EXIT_INPUT

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            shown = display_path(self.file)
            where = shown if self.line is None else f"{shown}:{self.line}"
            where += ": "
        text = f"{where}{self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class InputError(PromptctlError):
    """A prompt, eval set, config or command line that cannot be used as given (exit 2)."""

    exit_code = EXIT_INPUT


class ProviderError(PromptctlError):
    """The model server failed in a way no retry could mend (exit 3)."""

    exit_code = EXIT_PROVIDER


class ParamRejected(InputError):
    """An endpoint refused a request parameter (HTTP 400 naming it). `param` names it, so a
    caller that can do without the parameter (self-consistency without `n`) may."""

    def __init__(self, message: str, *, param: str, file: str | Path | None = None,
                 line: int | None = None, fix: str | None = None) -> None:
        self.param = param
        super().__init__(message, file=file, line=line, fix=fix)
