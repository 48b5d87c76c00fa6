"""`promptctl probe`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from promptctl.cli.common import fail, handle_errors, is_terminal, open_project_store, project
from promptctl.cli.eval_cmd import MAX_CONCURRENCY, MAX_TIMEOUT
from promptctl.errors import EXIT_INTERRUPTED, EXIT_PROVIDER, InputError


@handle_errors
def probe(
    prompt: Annotated[Path, typer.Argument(help="The prompt file to probe.")],
    label: Annotated[list[str] | None, typer.Option(
        "--label", "-l", metavar="VALUE", help="An answer of the prompt to probe (a label, or a "
        "number for number and integer outputs); repeat for several.")] = None,
    n: Annotated[int, typer.Option(
        "-n", min=1, max=1000, help="Inputs to generate per label.")] = 10,
    generator: Annotated[str | None, typer.Option(
        "--generator", metavar="MODEL", help="The model that writes the inputs (default: the "
        "generator prompt's model:, else the model probed).")] = None,
    generator_prompt: Annotated[Path | None, typer.Option(
        "--generator-prompt", metavar="FILE", help="A prompt file of your own that asks for "
        "the inputs (its templates see prompt_text, variables, output_type, labels, value, "
        "n); default: the built-in one.")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="The model the prompt runs on (default: the prompt's model:).")] = None,
    tolerance: Annotated[float | None, typer.Option(
        "--tolerance", min=0.0, help="Number and integer outputs: an answer within this of the "
        "label agrees (default: exact).")] = None,
    save: Annotated[Path | None, typer.Option(
        "--save", metavar="FILE", help="Append the generated rows to this JSONL eval set with "
        "source: probe and reviewed: false (not scored until a person sets reviewed: true).")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=MAX_CONCURRENCY, help="Requests in flight (default 8; 1 for local GGUF "
        "endpoints).")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, max=MAX_TIMEOUT, help="Seconds one attempt of a request may take (default 60; "
        "or the endpoint's timeout:); a slow local model writing many inputs may need more.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Ask a model for inputs the prompt should answer with each --label, run them
    through the prompt and report how many got that answer.

    Per label: the round-trip agreement (the share of generated inputs answered
    with the label) with its 95% interval and n, and the other answers with
    their counts. Both the generation and the evaluation are stored runs,
    cached: the same probe again sends nothing. Probe runs never stand for the
    prompt's version in history, diff or check. Exit 3 when requests failed
    after every retry.
    """
    from promptctl.cli.eval_cmd import _Bar
    from promptctl.engine import EvalOptions
    from promptctl.probe import ProbeRequest
    from promptctl.probe import probe as run_probe
    from promptctl.render.jsonout import dumps
    from promptctl.render.terminal import console, probe_summary

    if not label:
        raise InputError("no --label given", fix=f"name the answer to probe: promptctl probe "
                         f"{prompt} --label VALUE")
    config = project()
    store = open_project_store(config)
    request = ProbeRequest(path=prompt, labels=tuple(label), n=n, model=model,
                           generator=generator, generator_prompt=generator_prompt,
                           tolerance=tolerance, save=save)
    options = EvalOptions(concurrency=concurrency, use_cache=not no_cache, timeout=timeout)
    current: list[str] = []
    show_bar = not json_out and is_terminal(__import__("sys").stderr)

    def go(bar: Any) -> Any:
        return run_probe(request, store=store, config=config, options=options, progress=bar,
                         on_start=current.append)

    try:
        if show_bar:
            with _Bar(f"probe {prompt.name}") as bar:
                result = go(bar)
        else:
            result = go(None)
    except KeyboardInterrupt:
        raise fail("interrupted: run the same command again; what was answered comes from the "
                   "cache", EXIT_INTERRUPTED) from None
    if json_out:
        typer.echo(dumps({"probe": result.to_json()}))
    else:
        probe_summary(console(), result)
    if result.run.failed_requests:
        raise fail(f"{result.run.failed_requests} request(s) failed after every retry; they are "
                   "not counted in the agreement (see `promptctl show "
                   f"{result.run.id}`). Run the probe again to try them", EXIT_PROVIDER)
