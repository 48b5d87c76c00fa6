"""`promptctl check`: the CI gate for pull requests that change prompts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.cli.eval_cmd import MAX_RESPONSE_MB
from promptctl.cli.report_cmd import html_option, write_check_report
from promptctl.errors import InputError

if TYPE_CHECKING:
    from promptctl.results import CheckResult, CompatResult
    from promptctl.store import Store

GITHUB_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _write(path: Path, text: str, *, append: bool = False) -> None:
    from promptctl.render.files import write_atomic

    try:
        write_atomic(path, text, append=append)
    except OSError as exc:
        raise InputError(f"cannot write the report: {exc.strerror or exc}", file=path,
                         fix="choose a writable path") from None


def publish(store: Store, result: CheckResult | CompatResult, *, markdown_text: str,
            junit_text: Callable[[], str], terminal: Callable[[], None],
            markdown: Path | None, junit: Path | None, html: Path | None,
            json_out: bool) -> None:
    """What `check` and `compat` do with their result: the Markdown in the CI job's summary
    and where asked, JUnit, HTML, then JSON or the terminal table; a gate's exit code."""
    from promptctl.render.jsonout import dumps

    summary_file = os.environ.get(GITHUB_SUMMARY_ENV)
    if summary_file:
        _write(Path(summary_file), markdown_text + "\n", append=True)
    if markdown is not None:
        _write(markdown, markdown_text)
    if junit is not None:
        _write(junit, junit_text())
    if html is not None:
        write_check_report(store, result, html)
    if json_out:
        typer.echo(dumps(result.to_json()))
    else:
        terminal()
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@handle_errors
def check(
    base: Annotated[str | None, typer.Option(
        metavar="REF", help="Git ref to compare with (default: the merge base of HEAD with origin/main, "
        "or main).")] = None,
    prompt: Annotated[list[str] | None, typer.Option(
        "--prompt", "-p", metavar="PROMPT",
        help="Only this prompt (file or name); repeat for several.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", metavar="MODEL",
        help="Model for both sides (default: each version's model:).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Fail a drop beyond max_regression even when it is not significant.")] = False,
    significance: Annotated[float, typer.Option(
        metavar="P", help="Level of the paired test a regression must pass to fail the gate.")] = 0.05,
    concurrency: Annotated[int | None, typer.Option(min=1, max=1000, metavar="N",
                                                    help="Requests in flight.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, max=3600.0, metavar="SECONDS",
        help="Seconds one attempt of a request may take, answer included (default 60).")] = None,
    max_response_mb: Annotated[float | None, typer.Option(
        "--max-response-mb", metavar="MB", min=0.001, max=MAX_RESPONSE_MB,
        help="The largest response read, in MiB once decompressed (default 16).")] = None,
    junit: Annotated[Path | None, typer.Option(metavar="FILE", help="Write JUnit XML to FILE.")] = None,
    markdown: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Write the Markdown report to FILE (for a PR comment).")] = None,
    html: Annotated[Path | None, typer.Option(
        metavar="FILE", callback=html_option,
        help="Write the HTML report (runs, diffs, rows) to FILE (needs the report extra).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    trust_pr_config: Annotated[bool, typer.Option(
        "--trust-pr-config",
        help="Use the work tree's promptctl.yaml (endpoints, API key variables, prices, store) "
        "instead of the base commit's.")] = False,
) -> None:
    """Evaluate each prompt changed since the base and apply its thresholds.

    A prompt is checked when its file or its eval set changed. Its current
    version is evaluated and compared, row by row, with its baseline at the
    base commit (a stored run, or the base version evaluated from git). The
    prompt's `thresholds` are its gates: `{metric: {min, max}}` on the current
    value, and `max_regression: {metric: limit}` on the drop versus the
    baseline, which fails only when also significant (p < --significance)
    unless --strict. The Markdown report goes to $GITHUB_STEP_SUMMARY when set.

    Endpoints, API key variables, prices and the store come from the base
    commit's promptctl.yaml: a pull request cannot choose where CI's secrets are
    sent. What it changes there is reported; --trust-pr-config uses it instead.

    Exit 0 all gates pass, 1 a gate failed, 2 input or usage error, 3 the
    provider failed (then the verdict is unknown: 3 wins over 1).
    """
    from promptctl.gate import CheckOptions, run_check, trusted_config
    from promptctl.render.markdown import check_markdown
    from promptctl.render.terminal import console
    from promptctl.selection import find_prompt

    config, config_source = trusted_config(project(), base, trust_pr_config=trust_pr_config)
    for item in prompt or []:
        # An unknown prompt is refused as every command refuses one (the names it is close
        # to, those there are); the gate is given what was typed, which then names a file.
        find_prompt(None, config, item)
    store = open_project_store(config)
    err = console(stderr=True)
    options = CheckOptions(base=base, prompts=list(prompt or []), model=model,
                           significance=significance, strict=strict, concurrency=concurrency,
                           timeout=timeout, max_response_mb=max_response_mb)

    def say(message: str) -> None:
        from rich.markup import escape

        err.print(f"[dim]{escape(message)}[/]", soft_wrap=True)

    result = run_check(config, store, options, on_event=say, config_source=config_source)
    from promptctl.render.check import check_terminal
    from promptctl.render.junit import check_junit

    publish(store, result, markdown_text=check_markdown(result),
            junit_text=lambda: check_junit(result),
            terminal=lambda: check_terminal(console(), result), markdown=markdown, junit=junit,
            html=html, json_out=json_out)
