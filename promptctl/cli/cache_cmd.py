"""`promptctl cache stats` and `promptctl cache clear`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.errors import InputError

app = typer.Typer(help="The completion cache: every answer keyed by the full request.",
                  no_args_is_help=True, rich_markup_mode=None)

_MAX_AGE = timedelta(days=36525)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """'30d', '12h', '90m', '2w' or '45s' as a duration."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*([smhdw])\s*", text[:64])
    if match is None:
        raise InputError(f"--older-than {text[:40]!r} is not a duration",
                         fix="write a number and a unit: 45s, 90m, 12h, 30d or 2w")
    try:
        age = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        age = _MAX_AGE * 2
    if age > _MAX_AGE:
        raise InputError(f"--older-than {text.strip()[:40]} is more than a century",
                         fix="write a shorter duration, or clear the whole cache without --older-than")
    return age


@app.command("stats")
@handle_errors
def stats(json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False) -> None:
    """How many completions are cached, and how much space they take."""
    from promptctl.render.jsonout import dumps

    info = open_project_store(project(), create=False).cache_stats()
    if json_out:
        typer.echo(dumps(info))
        return
    typer.echo(f"entries   {info['entries']}\nresponses {info['response_bytes'] / 1e6:.1f} MB\n"
               f"oldest    {info['oldest'] or '-'}\nnewest    {info['newest'] or '-'}\n"
               f"store     {info['store']} ({info['store_bytes'] / 1e6:.1f} MB)")


@app.command("clear")
@handle_errors
def clear(
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Only entries older than this (e.g. 30d, 12h).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Delete cached completions. Stored runs keep their rows; only re-use is lost."""
    from promptctl.render.jsonout import dumps

    before = None
    if older_than is not None:
        cutoff = datetime.now(UTC) - parse_age(older_than)
        before = cutoff.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    deleted = open_project_store(project()).cache_clear(before)
    if json_out:
        typer.echo(dumps({"deleted": deleted, "before": before}))
    else:
        suffix = f" older than {older_than}" if before else ""
        typer.echo(f"deleted {deleted} cached completion(s){suffix}")
