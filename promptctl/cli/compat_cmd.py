"""`promptctl compat`: every prompt, pipeline and agent on two models, compared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptctl.cli.check_cmd import publish
from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.cli.eval_cmd import MAX_CONCURRENCY, MAX_RESPONSE_MB, MAX_TIMEOUT
from promptctl.cli.report_cmd import html_option
from promptctl.errors import InputError


@handle_errors
def compat(
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="[PATH]...", help="Prompt, pipeline or agent files, or folders of them "
        "(default: every one in prompts/, pipelines/ and agents/).", show_default=False)] = None,
    from_model: Annotated[str | None, typer.Option(
        "--from", metavar="MODEL", help="Model A, the one in use: MODEL or ENDPOINT/MODEL.",
        show_default=False)] = None,
    to_model: Annotated[str | None, typer.Option(
        "--to", metavar="MODEL", help="Model B, the candidate: MODEL or ENDPOINT/MODEL.",
        show_default=False)] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Fail a drop beyond max_regression even when it is not significant.")] = False,
    significance: Annotated[float, typer.Option(
        metavar="P", help="Level of the paired test a regression must pass to fail.")] = 0.05,
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=MAX_CONCURRENCY, metavar="N",
        help="Requests in flight (default 8; 1 for local GGUF endpoints).")] = None,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Send the prompts' requests the cache does not answer through the "
        "endpoint's Batch API (pipelines and agents are sent as usual).")] = False,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, max=MAX_TIMEOUT, metavar="SECONDS",
        help="Seconds one attempt of a request may take, answer included (default 60).")] = None,
    max_response_mb: Annotated[float | None, typer.Option(
        "--max-response-mb", metavar="MB", min=0.001, max=MAX_RESPONSE_MB,
        help="The largest response read, in MiB once decompressed (default 16).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    junit: Annotated[Path | None, typer.Option(metavar="FILE", help="Write JUnit XML to FILE.")] = None,
    markdown: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Write the Markdown report to FILE (for a PR comment).")] = None,
    html: Annotated[Path | None, typer.Option(
        metavar="FILE", callback=html_option,
        help="Write the HTML report (runs, diffs, rows) to FILE (needs the report extra).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Evaluate every prompt, pipeline and agent on model A and model B, and compare.

    Both models replace the model each file names (a judge keeps its own). Each
    file's eval set is run on A and on B (cached: a repeat sends nothing), both
    runs are stored, and one table shows per file each metric's change B - A with
    its 95% interval, the paired test's p-value and the verdict. A file's
    `thresholds: max_regression: {metric: limit}` are the gates: a drop beyond
    the limit fails when significant (p < --significance), or with --strict on the
    drop alone. A file that names no eval set is reported as skipped. The
    Markdown report also goes to $GITHUB_STEP_SUMMARY when set.

    Exit 0 no regression, 1 a file regressed past its max_regression, 2 input
    or usage error, 3 the provider failed (3 wins over 1).
    """
    from promptctl.compat import CompatOptions, run_compat
    from promptctl.engine import EvalOptions
    from promptctl.render.markdown import compat_markdown
    from promptctl.render.terminal import console

    if not from_model or not to_model:
        missing = "--from" if not from_model else "--to"
        raise InputError(f"{missing} is required: compat compares model A (--from) with model "
                         "B (--to)", fix="promptctl compat --from gpt-4o-mini --to gpt-4.1-mini")
    config = project()
    store = open_project_store(config)
    err = console(stderr=True)
    options = CompatOptions(
        from_model=from_model, to_model=to_model, paths=list(paths or []),
        significance=significance, strict=strict,
        eval=EvalOptions(concurrency=concurrency, timeout=timeout,
                         max_response_mb=max_response_mb, batch=batch, use_cache=not no_cache))

    def say(message: str) -> None:
        from rich.markup import escape

        if not json_out:
            err.print(f"[dim]{escape(message)}[/]", soft_wrap=True)

    result = run_compat(config, store, options, on_event=say)
    from promptctl.render.check import compat_terminal
    from promptctl.render.junit import compat_junit

    publish(store, result, markdown_text=compat_markdown(result),
            junit_text=lambda: compat_junit(result),
            terminal=lambda: compat_terminal(console(), result), markdown=markdown, junit=junit,
            html=html, json_out=json_out)
