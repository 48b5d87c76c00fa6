"""`promptctl report`: one self-contained HTML file of runs, a diff and a history."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.errors import InputError
from promptctl.render import TEXT_LIMIT

if TYPE_CHECKING:
    from promptctl.results import CheckResult, CompatResult
    from promptctl.store import Store


def run_document(store: Store, ref: str) -> dict[str, Any]:
    """A run as `promptctl show RUN --json` prints it, its rows read from the store as the
    report takes them (never all held at once, however long their texts)."""
    from promptctl.render.jsonout import row_json, run_json
    from promptctl.runs import read_run

    record = store.get_run(ref)
    return {"run": run_json(read_run(record)),
            "rows": (row_json(r) for r in store.iter_rows_paged(record["id"]))}


def write_html(path: Path, document: str | Iterable[str]) -> None:
    """Write the report to `path` (creating its folder), or an InputError naming it."""
    from promptctl.render.files import write_atomic

    try:
        write_atomic(path, document)
    except OSError as exc:
        raise InputError(f"cannot write the report: {exc.strerror}", file=path,
                         fix="choose a writable path with -o") from None


def html_option(value: Path | None) -> Path | None:
    """Option callback for `--html FILE`: refuse before any work when charts cannot be drawn."""
    if value is not None:
        from promptctl.render.html import INSTALL_HINT, charts_available

        if not charts_available():
            raise typer.BadParameter(f"HTML reports need vl-convert-python: {INSTALL_HINT}")
    return value


def write_check_report(store: Store, result: CheckResult | CompatResult, path: Path) -> None:
    """The report of `promptctl check`: each checked prompt's current run, and its diff
    against the baseline where there is one; of `promptctl compat`: each file's run on
    model B, and its diff against the run on model A."""
    from promptctl.compare import compare_runs
    from promptctl.render.html import iter_report
    from promptctl.results import CompatResult

    runs, diffs = [], []
    for entry in result.prompts:
        current, baseline = entry.current_run, entry.baseline_run
        if current:
            runs.append(run_document(store, current))
            if baseline:
                # html.py still takes the JSON form
                diffs.append(compare_runs(store, baseline, current).to_json())
    if isinstance(result, CompatResult):
        title = f"promptctl compat: {result.from_model} to {result.to_model}"
    else:
        head = result.head.commit or ""
        base = result.base.commit or ""
        title = "promptctl check" + (f": {head[:12]} against {base[:12]}" if head and base else "")
    write_html(path, iter_report(runs, diffs, title=title, check=result))


@handle_errors
def report(
    runs: Annotated[list[str] | None, typer.Argument(
        metavar="RUN", help="Run ids (or unique prefixes): summary, charts and every row.",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE.html", help="Where to write the report (required).",
        show_default=False)] = None,
    diff: Annotated[tuple[str, str] | None, typer.Option(
        "--diff", metavar="A B", help="Also compare run B against run A (run ids or prefixes).",
        show_default=False)] = None,
    history: Annotated[str | None, typer.Option(
        "--history", metavar="PROMPT", help="Also the prompt's metrics across its versions "
        "and models, and each metric against cost with the Pareto front (prompt file or "
        "name).", show_default=False)] = None,
    text_limit: Annotated[int, typer.Option(
        "--text-limit", metavar="N", min=1, help="Characters of each text a cell shows (input, "
        "completion, answer, expected, judge and step texts); a cut cell says how many more "
        "there are, and `promptctl show RUN --row ID` prints them.")] = TEXT_LIMIT,
) -> None:
    """Write one self-contained HTML report: runs, a diff, a history.

    Per run: metrics with their 95% intervals as charts, failed requests,
    tokens, cost and latency percentiles, and every row (input, completion,
    answer, expected, scores) with a search box and a failures-only filter.
    --diff adds deltas with intervals and p-values, tokens, cost and latency
    per row, and the rows that flipped; --history a trend per metric across
    commits and each metric against the cost of 1,000 rows, the Pareto front
    marked. The file loads nothing from
    the network and runs none of the text it shows. Each text is cut to
    --text-limit characters, so the file grows by a few kilobytes a row
    however long the texts are. Needs the `report` extra (vl-convert-python);
    without it, the error names the command that installs it.
    """
    from promptctl.render.html import iter_report, require_charts

    if output is None:
        raise InputError("no output file", fix="add -o FILE.html")
    if not runs and diff is None and history is None:
        raise InputError("nothing to report",
                         fix="name runs (promptctl report RUN -o FILE.html), --diff A B or "
                         "--history PROMPT")
    require_charts()
    config = project()
    store = open_project_store(config, create=False)  # a report only reads
    documents = [run_document(store, ref) for ref in runs or []]
    diffs = []
    if diff is not None:
        from promptctl.selection import diff as pick_and_compare

        # html.py still takes the JSON form
        diffs.append(pick_and_compare(store, config, diff[0], diff[1], prompt=None,
                                      models=[]).to_json())
    histories = []
    if history is not None:
        from promptctl.compare import history as build_history
        from promptctl.selection import find_prompt

        name = find_prompt(store, config, history).name
        found = build_history(store, name, root=config.root)
        if not found.versions and not found.searches:
            raise InputError(f"no complete run of {name!r} in the store",
                             fix=f"evaluate it first: promptctl eval prompts/{name}.yaml")
        # html.py still takes the JSON form
        histories.append(found.to_json())
    write_html(output, iter_report(documents, diffs, histories, text_limit=text_limit))
    size = output.stat().st_size
    typer.echo(f"wrote {output} ({size / 1e6:.1f} MB)" if size >= 1_000_000
               else f"wrote {output} ({size / 1e3:.0f} kB)")
