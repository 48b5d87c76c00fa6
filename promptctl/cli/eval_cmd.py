"""`promptctl eval`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promptctl.cli.common import fail, handle_errors, is_terminal, open_project_store, project
from promptctl.errors import EXIT_INTERRUPTED, EXIT_PROVIDER, InputError, ProviderError

if TYPE_CHECKING:
    from promptctl.engine import Progress

# Bounds on what the command line may ask: beyond them a value is a typo (or an attack on a
# CI runner) and must fail at once rather than plan a billion requests.
MAX_ROWS = 10**9
MAX_REPEAT = 1000
MAX_CONCURRENCY = 1000
MAX_RATE = 10**9
MAX_TIMEOUT = 3600.0
MAX_RESPONSE_MB = 1024.0
MAX_SAMPLES = 100


class _Bar:
    """A rich progress bar on stderr: done/total, rate, errors, retries, cache hits, cost."""

    def __init__(self, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from promptctl.render.terminal import console

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), console=console(stderr=True), transient=True)
        self.label = label
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, state: Progress) -> None:
        import time

        if self.task is None:
            self.task = self.progress.add_task(self.label, total=state.total, stats="")
        elapsed = max(time.monotonic() - state.started, 1e-9)
        stats = (f"{state.done / elapsed:.1f}/s  errors {state.errors}  retries {state.retries}  "
                 f"cached {state.cached}  spent ${state.spent_usd:.4f}")
        if state.note:
            stats += f"  {state.note}"
        self.progress.update(self.task, completed=state.done, stats=stats)


def refuse_with_samples(*, repeat: int, batch: bool, dry_run: bool, resume: str | None) -> None:
    """The options --samples does not combine with, refused before anything is loaded."""
    if repeat != 1:
        raise InputError("--samples and --repeat measure different things (a vote over samples "
                         "at a temperature; the instability of one answer at temperature 0) "
                         "and do not combine", fix="run them as two evaluations")
    for flag, given, why in (("--batch", batch, "the samples of a row are sent as they are "
                              "voted on"),
                             ("--dry-run", dry_run, "the estimate does not count samples yet"),
                             ("--resume", resume is not None, "a resumed run samples as it "
                              "started")):
        if given:
            raise InputError(f"--samples does not combine with {flag}: {why}",
                             fix=f"drop {flag}" if flag != "--resume"
                             else f"promptctl eval --resume {resume}")


def sampled_jobs(jobs: list[Any], k: int, temperature: float | None, vote: str | None,
                 config: Any) -> list[Any]:
    """The jobs with their prompts sampled K times per row; pipelines and agents are
    refused (their rows are several requests, each depending on the one before). A judge's
    model must be usable (its key set) before anything is sent."""
    import dataclasses

    from promptctl.errors import display_path
    from promptctl.metrics.judge import require_model
    from promptctl.prompts import Prompt
    from promptctl.sampling import load_sampling

    sampling = load_sampling(k, temperature, vote, config.root)
    if sampling.judge is not None:
        judge = sampling.judge
        require_model(judge.model, config, judge.params, metric="--vote",
                      what=f"judge {display_path(judge.prompt.path)}", file=judge.prompt.path,
                      line=None, elsewhere=f"give {display_path(judge.prompt.path)} a model: "
                      "on another endpoint")
    out = []
    for job in jobs:
        target = job.target
        if not isinstance(target, Prompt):
            article = "an" if target.kind[:1] in "aeiou" else "a"
            raise InputError(f"--samples applies to prompts; {target.name} is {article} {target.kind} "
                             "(its rows are several requests, each depending on the one "
                             "before)", file=target.path, fix=f"drop --samples for {target.kind}s")
        if target.output.reads_calls:
            raise InputError(f"--samples votes on text answers; {target.name} reads its answer "
                             "from tool calls", file=target.path,
                             fix="drop --samples for prompts whose output is tool calls")
        out.append(dataclasses.replace(job, target=dataclasses.replace(target, sampling=sampling)))
    return out


@handle_errors
def eval_(
    prompts: Annotated[list[Path] | None, typer.Argument(help="Prompt files to evaluate.")] = None,
    evalset: Annotated[Path | None, typer.Option(
        "--evalset", help="Eval set file (default: the prompt's evalset:).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="MODEL (OpenAI) or ENDPOINT/MODEL; repeat for one run per model. "
        "Default: the prompt's model:.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, max=MAX_ROWS, help="Only the first N rows.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, max=MAX_CONCURRENCY,
        help="Requests in flight (default 8; 1 for local GGUF endpoints).")] = None,
    repeat: Annotated[int, typer.Option(min=1, max=MAX_REPEAT, help="Sample every row K times.")] = 1,
    samples: Annotated[int | None, typer.Option(
        min=2, max=MAX_SAMPLES, metavar="K",
        help="Self-consistency: K answers per row at --temperature, the voted one scored and "
        "compared with the first sample (one request with n=K where the endpoint takes it).")] = None,
    temperature: Annotated[float | None, typer.Option(
        min=0.0, max=2.0, help="Temperature of the samples of --samples (default 0.7).")] = None,
    vote: Annotated[str | None, typer.Option(
        "--vote", metavar="majority|judge:FILE",
        help="How --samples picks a row's answer: the most common (default; a tie goes to the "
        "answer sampled first), or the candidate a judge prompt names by number.")] = None,
    rpm: Annotated[int | None, typer.Option(
        min=1, max=MAX_RATE,
        help="Requests per minute at most (default: the endpoint's rpm: or none).")] = None,
    tpm: Annotated[int | None, typer.Option(
        min=1, max=MAX_RATE, help="Tokens per minute at most, estimated before sending.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0.1, max=MAX_TIMEOUT, help="Seconds one attempt of a request may take, from sending "
        "to the answer's last byte (default 60; or the endpoint's timeout:). A request is tried "
        "up to 5 times.")] = None,
    max_response_mb: Annotated[float | None, typer.Option(
        "--max-response-mb", metavar="MB", min=0.001, max=MAX_RESPONSE_MB,
        help="The largest response read, in MiB once decompressed (default 16; or the "
        "endpoint's max_response_mb:); a larger one is an error row.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    cache_only: Annotated[bool, typer.Option(
        "--cache-only", help="Replay from the cache; send nothing (a miss is an error row).")] = False,
    ref: Annotated[str | None, typer.Option(
        "--ref", help="Evaluate the prompt (and its eval set) as committed at this git ref, read "
        "from git without touching the work tree.")] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="Finish an interrupted run: send only the rows it has no answer for.")] = None,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Send the requests the cache does not answer through the endpoint's "
        "Batch API (OpenAI: half price, results within 24 h); --resume re-attaches.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show requests, tokens and estimated cost; send nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Run prompts against their eval set, score, store and print the summary.

    Each prompt is also scored on its own few-shot examples, shown beside the
    eval set: does the model follow its examples, does the prompt overfit them?
    Exit 3 when requests failed after every retry (those rows are errors, not
    wrong answers).
    """
    from promptctl.engine import EvalOptions, build_jobs, resume_eval, run_job
    from promptctl.render.jsonout import dumps, run_json
    from promptctl.render.terminal import batch_note, console, run_summary
    from promptctl.runs import RunResult, read_run

    if no_cache and cache_only:
        raise InputError("--no-cache and --cache-only contradict each other", fix="choose one")
    if batch and cache_only:
        raise InputError("--batch and --cache-only contradict each other (--cache-only sends "
                         "nothing)", fix="choose one")
    if samples is None and (temperature is not None or vote is not None):
        flag = "--temperature" if temperature is not None else "--vote"
        raise InputError(f"{flag} applies to --samples K only (prompts run at their own "
                         "temperature, 0 unless their params say otherwise)",
                         fix=f"add --samples 5, or drop {flag}")
    if samples is not None:
        refuse_with_samples(repeat=repeat, batch=batch, dry_run=dry_run, resume=resume)
    if resume is not None:
        if prompts or model or ref or evalset or limit or repeat != 1 or dry_run:
            raise InputError("--resume takes only the run id (and --concurrency, --timeout, "
                             "--max-response-mb, --no-cache, --cache-only, --batch, --json)",
                             fix=f"promptctl eval --resume {resume}")
    elif not prompts:
        raise InputError("no prompt given", fix="promptctl eval prompts/NAME.yaml (or --resume RUN)")
    config = project()
    from promptctl.pipelines import is_pipeline_file

    if any(is_pipeline_file(p) for p in prompts or []) and (dry_run or repeat != 1 or batch):
        flag = "--dry-run" if dry_run else "--repeat" if repeat != 1 else "--batch"
        raise InputError(f"{flag} does not apply to pipelines (a step's request depends on "
                         "the answers before it)",
                         fix="run the pipeline with --limit 1 instead" if dry_run
                         else f"drop {flag} for pipelines")
    from promptctl.agents import is_agent_file

    if any(is_agent_file(p) for p in prompts or []) and (dry_run or batch):
        flag = "--dry-run" if dry_run else "--batch"
        raise InputError(f"{flag} does not apply to agents (a turn's request depends on the "
                         "tools' results before it)",
                         fix="run the agent with --limit 1 instead" if dry_run
                         else f"drop {flag} for agents")
    jobs = build_jobs(prompts or [], models=model or [], evalset=evalset, ref=ref, config=config)
    if samples is not None:
        jobs = sampled_jobs(jobs, samples, temperature, vote, config)
    options = EvalOptions(concurrency=concurrency, limit=limit, repeat=repeat,
                          use_cache=not no_cache, cache_only=cache_only, rpm=rpm, tpm=tpm,
                          timeout=timeout, max_response_mb=max_response_mb, batch=batch)
    store = open_project_store(config)
    from promptctl.errors import display_path

    # Generated rows nobody has checked yet (probe --save) are left out of every metric.
    for path, count in {j.evalset.path: j.evalset.unreviewed for j in jobs
                        if j.evalset.unreviewed}.items():
        typer.echo(f"note: skipped {count} unreviewed row(s) of {display_path(path)} (reviewed: "
                   "false); set reviewed: true on those a person has checked to score them",
                   err=True)
    if dry_run:
        from promptctl.engine.estimate import estimate
        from promptctl.prompts import Prompt
        from promptctl.render.terminal import dry_run_table

        plans = [estimate(j.target, j.evalset, j.resolved, config=config, store=store,
                          options=options) for j in jobs if isinstance(j.target, Prompt)]
        if json_out:
            typer.echo(dumps({"dry_run": plans}))
        else:
            dry_run_table(console(), plans)
        return
    out = console()
    done: list[RunResult] = []
    current: list[str] = []
    show_bar = not json_out and is_terminal(__import__("sys").stderr)

    def one(label: str, call: Any) -> None:
        if show_bar:
            with _Bar(label) as bar:
                run = call(bar)
        else:
            run = call(None)
        done.append(read_run(run))
        if not json_out:
            run_summary(out, done[-1])
            batch_note(out, done[-1])
            out.print()

    try:
        if resume is not None:
            one(f"resume {resume}", lambda bar: resume_eval(
                resume, store=store, config=config, options=options, progress=bar,
                on_start=current.append))
        for job in jobs:
            one(f"{job.target.name} · {job.resolved.spec}", lambda bar, j=job: run_job(
                j, store=store, config=config, options=options, progress=bar,
                on_start=current.append))
    except ProviderError as exc:
        # The endpoint failed mid-run: the run keeps what was answered.
        if current and (not done or done[-1].id != current[-1]):
            exc.message += (f"\n  the rows answered so far are stored in run {current[-1]}; finish "
                            f"it with: promptctl eval --resume {current[-1]}")
        raise
    except KeyboardInterrupt:
        run_id = current[-1] if current else None
        if json_out and done:
            typer.echo(dumps({"runs": [run_json(r) for r in done]}))
        if run_id is None:
            raise fail("interrupted before any run started", EXIT_INTERRUPTED) from None
        batches = " (its batches keep running on the server; the resume re-attaches to them)" \
            if batch else ""
        raise fail(f"interrupted: the rows answered so far are stored in run {run_id}; finish it "
                   f"with: promptctl eval --resume {run_id}{batches}", EXIT_INTERRUPTED) from None
    if json_out:
        typer.echo(dumps({"runs": [run_json(r) for r in done]}))
    failed = [r for r in done if r.failed_requests]
    if failed:
        errors = sum(r.failed_requests for r in failed)
        again = "; ".join(f"promptctl eval --resume {r.id}" for r in failed)
        raise fail(f"{errors} request(s) failed after every retry; they are stored as errors and "
                   f"not scored (see `promptctl show RUN`). Try them again with: {again}", EXIT_PROVIDER)
