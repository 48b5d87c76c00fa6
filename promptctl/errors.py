"""Errors that tell the user what went wrong and what to do about it.

The CLI catches only `PromptctlError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class PromptctlError(Exception):
    """Base class: a message, where it happened (file, line) and the fix."""

    exit_code = 2

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
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        text = f"{where}{self.message}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class InputError(PromptctlError):
    """A prompt, eval set, config or command line that cannot be used as given (exit 2)."""

    exit_code = 2


class ProviderError(PromptctlError):
    """The model server failed in a way no retry could mend (exit 3)."""

    exit_code = 3


class GateFailed(PromptctlError):
    """A `check` gate failed (exit 1)."""

    exit_code = 1
