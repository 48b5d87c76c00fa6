"""`promptctl tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptctl.cli.common import fail, handle_errors, open_project_store, project
from promptctl.cli.eval_cmd import MAX_TIMEOUT
from promptctl.errors import EXIT_INTERRUPTED, InputError


@handle_errors
def tune(
    prompt: Annotated[Path, typer.Argument(help="The prompt file to tune.")],
    pool: Annotated[Path | None, typer.Option(
        "--pool", metavar="FILE", help="More candidate few-shot examples (an eval set file), "
        "beside the train split and the prompt's own examples.")] = None,
    budget: Annotated[str | None, typer.Option(
        "--budget", metavar="REQUESTS|$COST", help="Most requests to send (200), or dollars "
        "('$0.50', needs the model's price and params.max_tokens). Cached answers are free; "
        "the final test is kept back from the start. Default: no limit.")] = None,
    strategy: Annotated[str, typer.Option(
        help="fewshot (choose the examples), instructions (the model rewrites the "
        "instruction), or both.")] = "fewshot",
    seed: Annotated[int, typer.Option(
        min=0, help="Fixes the splits and the random candidates.")] = 0,
    metric: Annotated[str | None, typer.Option(
        metavar="NAME", help="The objective (default: the first metric with a threshold, "
        "else the first metric).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="MODEL or ENDPOINT/MODEL (default: the prompt's model:).")] = None,
    evalset: Annotated[Path | None, typer.Option(
        "--evalset", help="Eval set to split (default: the prompt's evalset:).")] = None,
    proposer: Annotated[Path | None, typer.Option(
        "--proposer", metavar="FILE", help="The prompt file that proposes instructions "
        "(default: the built-in one).")] = None,
    candidates: Annotated[int, typer.Option(
        min=0, max=1000, help="Random few-shot sets to try, beside zero-shot and the "
        "bootstrapped set.")] = 8,
    proposals: Annotated[int, typer.Option(
        min=1, max=100, help="Instructions to ask the proposer for.")] = 4,
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=1000, help="Requests in flight.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, max=MAX_TIMEOUT, metavar="SECONDS",
        help="Seconds one attempt of a request may take, answer included (default 60).")] = None,
    html: Annotated[Path | None, typer.Option(
        metavar="FILE", help="Write the HTML report of the search here (default: "
        ".promptctl/tune/NAME-DATE.html when a better prompt is written).")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted tuning with the same options.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the splits and the most requests each phase may send; send "
        "nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Search for a better version of a prompt, and prove it on held-out rows.

    The eval set is split once (by --seed) into train, validation and test.
    Candidates (other few-shot examples, rewritten instructions) are scored on
    validation within the budget; the best is compared with the original on
    the test rows, which nothing saw before, by a paired test. When it is
    significantly better, the new prompt file is committed on a new branch
    tune/NAME-DATE (the work tree and HEAD are left alone). Otherwise nothing
    is written and the command says why (exit 0).
    """
    import dataclasses
    from datetime import UTC, datetime

    from promptctl.engine.jobs import build_jobs
    from promptctl.render.files import write_atomic
    from promptctl.render.jsonout import dumps
    from promptctl.render.terminal import console
    from promptctl.render.tune import tune_html, tune_terminal
    from promptctl.tune import TuneOptions, parse_budget
    from promptctl.tune import tune as run_tune

    options = TuneOptions(strategy=strategy, seed=seed, metric=metric,
                          budget=parse_budget(budget), pool=pool, proposer=proposer,
                          resume=resume, dry_run=dry_run, concurrency=concurrency, timeout=timeout,
                          random_sets=candidates, proposals=proposals)
    config = project()
    (job,) = build_jobs([prompt], models=[model] if model else [], evalset=evalset, ref=None,
                        config=config)
    store = open_project_store(config)
    err = console(stderr=True)

    def say(message: str) -> None:
        if not json_out:
            from rich.markup import escape

            err.print(f"[dim]{escape(message)}[/]", soft_wrap=True)

    try:
        result = run_tune(prompt, job.resolved, job.evalset, store=store, config=config,
                          options=options, say=say)
    except KeyboardInterrupt:
        raise fail("interrupted: what was evaluated is stored; continue with the same options "
                   "and --resume", EXIT_INTERRUPTED) from None
    target = html
    if target is None and result.written:
        day = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        target = config.root / ".promptctl" / "tune" / f"{result.prompt}-{day}.html"
    if target is not None and not dry_run:
        result = dataclasses.replace(result, html=str(target))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, tune_html(result))
        except OSError as exc:
            raise InputError(f"cannot write the report: {exc.strerror or exc}", file=target,
                             fix="choose a writable path with --html") from None
    if json_out:
        typer.echo(dumps(result.to_json()))
    else:
        tune_terminal(console(), result)
