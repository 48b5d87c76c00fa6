"""`promptctl diff` and `promptctl history`."""

from __future__ import annotations

from typing import Annotated

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.errors import InputError


@handle_errors
def diff(
    a: Annotated[str | None, typer.Argument(
        help="Run id (or prefix); with --prompt also a git ref (main, HEAD~1, a sha) or a "
        "model.")] = None,
    b: Annotated[str | None, typer.Argument(
        help="Run id (or prefix); with --prompt also a git ref or a model.")] = None,
    prompt: Annotated[str | None, typer.Option(
        help="Prompt file or name: needed for git refs and models.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Once: the model of both sides. Twice: compare the two models at "
        "the prompt's current version.")] = None,
    run_missing: Annotated[bool, typer.Option(
        "--run-missing", help="Evaluate a side that has no stored run (like eval --ref).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown.")] = False,
) -> None:
    """Compare run B against run A, row by row.

    Per metric: A, B, delta, a 95% paired bootstrap interval of the delta and a
    p-value (exact McNemar for 0/1 scores, paired permutation for continuous
    ones); the same for tokens, cost (at each run's price; unknown without
    one) and latency p50/p90 per row (cache hits left out of latency); then
    the rows that flipped. A git ref with no stored run is an error
    that names the `eval --ref` command to run, or is evaluated with
    --run-missing.
    """
    from promptctl.render.jsonout import dumps
    from promptctl.selection import diff as pick_and_compare

    if json_out and markdown:
        raise InputError("--json and --markdown are two outputs", fix="choose one")
    config = project()
    # Only --run-missing writes: a diff that reads makes no store where there is none.
    store = open_project_store(config, create=run_missing)

    def say(message: str) -> None:
        from promptctl.render.terminal import console

        console(stderr=True).print(message, markup=False, soft_wrap=True)

    result = pick_and_compare(store, config, a, b, prompt=prompt, models=list(model or []),
                              run_missing=run_missing, say=say)
    if json_out:
        typer.echo(dumps(result.to_json()))
    elif markdown:
        from promptctl.render.compare import diff_markdown

        typer.echo(diff_markdown(result), nl=False)
    else:
        from promptctl.render.compare import diff_terminal
        from promptctl.render.terminal import console

        diff_terminal(console(), result)


@handle_errors
def history(
    prompt: Annotated[str, typer.Argument(help="Prompt file or name.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Metrics of a prompt across its versions (commits) and models, newest first.

    One line per prompt version with the commit, date, author and subject it
    ran at, and a trend line per metric. Then the runs made on parts of the
    eval set (tune's train, validation and test), a table per search: they
    never stand for a version.
    """
    from promptctl.compare import history as build
    from promptctl.render.jsonout import dumps
    from promptctl.selection import find_prompt

    config = project()
    store = open_project_store(config, create=False)
    result = build(store, find_prompt(store, config, prompt).name, model=model, root=config.root)
    if json_out:
        typer.echo(dumps(result.to_json()))
    else:
        from promptctl.render.compare import history_terminal
        from promptctl.render.terminal import console

        history_terminal(console(), result)
