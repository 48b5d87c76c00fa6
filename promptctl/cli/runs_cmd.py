"""`promptctl runs` and `promptctl show`."""

from __future__ import annotations

from typing import Annotated

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.errors import InputError, display_path


@handle_errors
def runs(
    prompt: Annotated[str | None, typer.Argument(
        help="Only runs of this prompt (its file or name).")] = None,
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """List stored runs: id, time, commit, dirty, prompt version, model, metrics."""
    from promptctl.render.jsonout import dumps, run_json
    from promptctl.render.terminal import console, runs_table
    from promptctl.runs import read_run
    from promptctl.selection import find_prompt

    config = project()
    store = open_project_store(config, create=False)
    # A prompt that is neither a file nor a name in prompts/ or the store is an error, not "no runs".
    ref = find_prompt(store, config, prompt) if prompt is not None else None
    found = store.list_runs(ref.name if ref is not None else None, limit=limit)
    if json_out:
        typer.echo(dumps({"runs": [run_json(read_run(r)) for r in found]}))
        return
    if not found:
        of = f" of {ref.name}" if ref is not None else ""
        command = display_path(ref.path) if ref is not None and ref.path is not None \
            else "prompts/NAME.yaml"
        typer.echo(f"no runs{of} stored yet: run `promptctl eval {command}`")
        return
    runs_table(console(), [read_run(r) for r in found])


@handle_errors
def show(
    run: Annotated[str, typer.Argument(help="Run id or a unique prefix of it.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    row: Annotated[str | None, typer.Option(
        "--row", metavar="ID", help="Only this row (every sample of it), each text in full: "
        "what the table and the HTML report cut short.", show_default=False)] = None,
) -> None:
    """One run, row by row: input, completion, answer, expected, scores, tokens, latency."""
    from promptctl.render.jsonout import dumps, show_json
    from promptctl.render.terminal import console, show_row_texts, show_rows
    from promptctl.runs import read_row, read_run

    store = open_project_store(project(), create=False)
    record = store.get_run(run)
    if row is None:
        rows = list(store.iter_rows(record["id"]))
    else:
        # A row id names an eval set row or a few-shot example: eval rows first, as iter_rows.
        rows = (store.rows_by_id(record["id"], [row])
                or store.rows_by_id(record["id"], [row], kind="fewshot"))
        if not rows:
            raise InputError(f"no row {row!r} in run {record['id']}",
                             fix=f"list its rows: promptctl show {record['id']}")
    result = read_run(record)
    if json_out:
        typer.echo(dumps(show_json(result, rows)))
        return
    if row is None:
        show_rows(console(), result, [read_row(r) for r in rows])
    else:
        show_row_texts(console(), result, [read_row(r) for r in rows])
