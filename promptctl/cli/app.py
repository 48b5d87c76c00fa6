"""The `promptctl` command. Heavy modules load inside commands so `--help` stays instant."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from promptctl import __version__
from promptctl.cli import (
    cache_cmd,
    check_cmd,
    compare_cmd,
    compat_cmd,
    eval_cmd,
    probe_cmd,
    report_cmd,
    rescore_cmd,
    runs_cmd,
    store_cmd,
    tune_cmd,
    validate_cmd,
)
from promptctl.cli.common import root_options
from promptctl.errors import EXIT_BUG, EXIT_INPUT, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["EXIT_BUG", "EXIT_INTERRUPTED", "app", "main"]

app = typer.Typer(
    name="promptctl",
    help="Versioned prompts, scored evals, stored runs and a CI gate for LLM prompts.\n\n"
    "Prompts are YAML files in git; `promptctl eval` runs one against an eval set at "
    "temperature 0, scores it and stores the run keyed by git commit and prompt version.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"promptctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    store: Annotated[str | None, typer.Option(
        "--store", metavar="URL", help="The results store: sqlite:///PATH or "
        "postgresql://USER@HOST[:PORT]/DB (password from PGPASSWORD or ~/.pgpass). Overrides "
        "$PROMPTCTL_STORE and store: in promptctl.yaml.")] = None,
) -> None:
    """promptctl: prompt evaluation with engineering rigour."""
    root_options["store"] = store


app.command("validate")(validate_cmd.validate)
app.command("eval")(eval_cmd.eval_)
app.command("runs")(runs_cmd.runs)
app.command("show")(runs_cmd.show)
app.command("diff")(compare_cmd.diff)
app.command("history")(compare_cmd.history)
app.command("check")(check_cmd.check)
app.command("compat")(compat_cmd.compat)
app.command("report")(report_cmd.report)
app.command("rescore")(rescore_cmd.rescore)
app.command("probe")(probe_cmd.probe)
app.command("init")(validate_cmd.init)
app.command("tune")(tune_cmd.tune)
app.add_typer(cache_cmd.app, name="cache")
app.add_typer(store_cmd.app, name="store")


def _broken_pipe(exc: SystemExit) -> bool:
    """Whether click raised `exc` because stdout's reader closed the pipe."""
    import errno

    context = exc.__context__
    return isinstance(context, OSError) and context.errno == errno.EPIPE


def _sigterm_as_ctrl_c() -> Callable[[], None]:
    """Handle SIGTERM (what CI cancellation, `timeout` and `kill` send) as Ctrl-C: a run is
    marked interrupted and its resume command printed, with Ctrl-C's exit code. Returns what
    restores the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (and receives signals)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Whatever handles Ctrl-C now: asyncio's while a run sends (it cancels the run's
        # task, which then ends as Ctrl-C ends it), else Python's KeyboardInterrupt.
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not on_sigterm:
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every way out has a deliberate exit code."""
    import sys

    restore = _sigterm_as_ctrl_c()
    try:
        code = app(argv, prog_name="promptctl", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        print("error: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        code = EXIT_INPUT  # a command line that cannot be used, as input errors are
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except SystemExit as exc:
        if _broken_pipe(exc):  # the reader of stdout went away (`| head`): click's own exit
            raise
        # promptctl's commands end with typer.Exit, which the app returns as a code: a
        # SystemExit here was raised by code that is not promptctl's (a sys.exit() in code the
        # project loads), and must not pass for a verdict, exit 0 least of all.
        import traceback

        traceback.print_exc()
        print(f"error: promptctl {__version__} stopped: sys.exit({exc.code!r}) was called while "
              "the command ran, before it finished (its reports may not be written); the "
              "traceback above says where; this is not a verdict on your prompts",
              file=sys.stderr)
        code = EXIT_BUG
    except BaseException:  # noqa: BLE001 - the last line of defence: report the bug, never exit 1
        import traceback

        traceback.print_exc()
        print(f"error: promptctl {__version__} crashed: this is a bug in promptctl, not a verdict "
              "on your prompts; the traceback above says where", file=sys.stderr)
        code = EXIT_BUG
    finally:
        restore()
    sys.exit(code if isinstance(code, int) else 0)
