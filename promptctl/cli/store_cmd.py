"""`promptctl store export`, `promptctl store import` and `promptctl store check`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from promptctl.cli.common import handle_errors, open_project_store, project

app = typer.Typer(help="Move runs between stores (SQLite, PostgreSQL) as JSONL, and check them.",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command("export")
@handle_errors
def export(
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="Only runs of this prompt (its name).")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="DATE", help="Only runs made on or after this date (2026-01-31, or "
        "2026-01-31T12:00 in UTC).")] = None,
) -> None:
    """Write stored runs on stdout as JSONL: one run with all its rows per line, oldest first."""
    from promptctl.store.transfer import export_runs, parse_since

    after = parse_since(since)
    store = open_project_store(project(), create=False)
    count = export_runs(store, sys.stdout.buffer, prompt=prompt, since=after)
    sys.stdout.flush()
    typer.echo(f"exported {count} run(s) from {store.location}", err=True)


@app.command("import")
@handle_errors
def import_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="A file from `promptctl store export`, or - "
                                        "for stdin.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Add the runs of an export to this store. A run already here is never overwritten: the
    same run again changes nothing, a different one of the same id is reported."""
    from promptctl.errors import InputError
    from promptctl.render.jsonout import dumps
    from promptctl.store.transfer import import_runs

    store = open_project_store(project())
    if file == "-":
        result = import_runs(store, sys.stdin.buffer, source="<stdin>")
    else:
        path = Path(file)
        try:
            with path.open("rb") as handle:
                result = import_runs(store, handle, source=str(path))
        except OSError as exc:
            raise InputError(f"cannot read the export: {exc.strerror}", file=path,
                             fix="give the file written by `promptctl store export`") from None
    if json_out:
        typer.echo(dumps({"imported": result.imported, "rows": result.rows,
                          "unchanged": result.unchanged,
                          "conflicts": [{"run": r, "differs": why} for r, why in result.conflicts]}))
    else:
        if result.imported:
            typer.echo(f"imported {len(result.imported)} run(s) with {result.rows} row(s) into "
                       f"{store.location}")
        if result.unchanged:
            typer.echo(f"{len(result.unchanged)} run(s) already in the store, unchanged")
        if not result.imported and not result.conflicts:
            typer.echo("nothing to import: the store already holds every run in the file"
                       if result.unchanged else "nothing to import: the file holds no runs")
    if result.conflicts:
        listed = "; ".join(f"{r} ({why})" for r, why in result.conflicts[:5])
        more = f" and {len(result.conflicts) - 5} more" if len(result.conflicts) > 5 else ""
        raise InputError(f"{len(result.conflicts)} run(s) in the file differ from the stored runs "
                         f"of the same id and were left as stored: {listed}{more}",
                         fix="compare with `promptctl show RUN --json`; a store keeps the first "
                         "copy of a run (import into another store to keep both)")


@app.command("check")
@handle_errors
def check(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """List every malformed run and row in the store, and why: what other commands leave out
    with a warning. Exit 0 when there is none, 1 when there is."""
    from promptctl.errors import EXIT_GATE
    from promptctl.render.jsonout import dumps
    from promptctl.render.terminal import cell, console
    from promptctl.store.check import check_store

    result = check_store(open_project_store(project(), create=False))
    if json_out:
        typer.echo(dumps(result.to_json()))
    else:
        con = console()
        for problem in result.malformed:
            where = f"run {problem.run_id}" + (f", {problem.row}" if problem.row else "")
            con.print(f"{cell(where, 300)}: {cell(problem.problem, 1000)}", soft_wrap=True)
        counted = f"{result.runs} run(s) and {result.rows} row(s) in {cell(result.store, 300)}"
        if result.malformed:
            con.print(f"{len(result.malformed)} malformed of {counted}: each is left out of runs, "
                      "show, diff, history, report and check\n  fix: import the run again from an "
                      "export of the store that made it (into a store without it), or delete it "
                      "with the database's own client", soft_wrap=True)
        else:
            con.print(f"checked {counted}: every one reads as promptctl writes it", soft_wrap=True)
    if result.malformed:
        raise typer.Exit(EXIT_GATE)
