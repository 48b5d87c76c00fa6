"""`promptctl rescore`: a stored run's completions scored again, without paying for them."""

from __future__ import annotations

from typing import Annotated

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.cli.eval_cmd import MAX_RESPONSE_MB


@handle_errors
def rescore(
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix of it.")],
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", metavar="NAME", help="Score only these configured metrics afresh (judges, "
        "scorers); the others keep their stored scores. Built-in metrics cost nothing and are "
        "always recomputed. May repeat.")] = None,
    concurrency: Annotated[int, typer.Option(
        min=1, max=256, help="Scorer requests in flight at once.")] = 8,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, max=3600, help="Seconds one attempt of a scorer request may take (default 60).")] = None,
    max_response_mb: Annotated[float | None, typer.Option(
        "--max-response-mb", metavar="MB", min=0.001, max=MAX_RESPONSE_MB,
        help="The largest scorer response read, in MiB once decompressed (default 16).")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Ask the judges again even when the cache has their answers.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Score a stored run's completions again (after a change to a judge prompt, an output
    pattern or a scorer) and store the result as a new run linked to the old one.

    Nothing is sent to the evaluated model; judges are asked only what the cache lacks.
    """
    from promptctl.engine.rescore import rescore_run
    from promptctl.render.jsonout import dumps, run_json
    from promptctl.render.terminal import console, run_summary
    from promptctl.runs import read_run

    config = project()
    store = open_project_store(config)
    names = [n for item in metrics or [] for n in item.split(",") if n.strip()]
    new = rescore_run(run, store=store, config=config, metrics=[n.strip() for n in names],
                      concurrency=concurrency, use_cache=not no_cache,
                      timeout=timeout, max_response_mb=max_response_mb)
    result = read_run(new)
    if json_out:
        typer.echo(dumps({"runs": [run_json(result)]}))
        return
    out = console()
    out.print(f"rescored run {result.parent_run} as run {result.id}, with "
              f"{result.options.get('prompt_used', 'the run prompt')}")
    run_summary(out, result)
