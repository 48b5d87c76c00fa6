"""`promptctl eval`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promptctl.cli.common import fail, handle_errors, is_terminal, open_project_store, project
from promptctl.errors import InputError, ProviderError

if TYPE_CHECKING:
    from promptctl.runner import Progress


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
        self.progress.update(self.task, completed=state.done, stats=stats)


@handle_errors
def eval_(
    prompts: Annotated[list[Path] | None, typer.Argument(help="Prompt files to evaluate.")] = None,
    evalset: Annotated[Path | None, typer.Option(
        "--evalset", help="Eval set file (default: the prompt's evalset:).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="MODEL (OpenAI) or ENDPOINT/MODEL; repeat for one run per model. "
        "Default: the prompt's model:.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N rows.")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Requests in flight (default 8; 1 for local GGUF endpoints).")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Sample every row K times.")] = 1,
    rpm: Annotated[int | None, typer.Option(
        min=1, help="Requests per minute at most (default: the endpoint's rpm: or none).")] = None,
    tpm: Annotated[int | None, typer.Option(
        min=1, help="Tokens per minute at most, estimated before sending.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")] = False,
    cache_only: Annotated[bool, typer.Option(
        "--cache-only", help="Replay from the cache; send nothing (a miss is an error row).")] = False,
    ref: Annotated[str | None, typer.Option(
        "--ref", help="Evaluate the prompt (and its eval set) as committed at this git ref, read "
        "from git without touching the work tree.")] = None,
    resume: Annotated[str | None, typer.Option(
        "--resume", help="Finish an interrupted run: send only the rows it has no answer for.")] = None,
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
    from promptctl.evalsets import load_evalset
    from promptctl.prompts import load_prompt
    from promptctl.providers import resolve_model
    from promptctl.render.jsonout import dumps, run_json
    from promptctl.render.terminal import console, run_summary
    from promptctl.runner import EvalOptions, resume_eval, run_eval

    if no_cache and cache_only:
        raise InputError("--no-cache and --cache-only contradict each other", fix="choose one")
    if resume is not None:
        if prompts or model or ref or evalset or limit or repeat != 1 or dry_run:
            raise InputError("--resume takes only the run id (and --concurrency, --no-cache, "
                             "--cache-only, --json)",
                             fix=f"promptctl eval --resume {resume}")
    elif not prompts:
        raise InputError("no prompt given", fix="promptctl eval prompts/NAME.yaml (or --resume RUN)")
    config = project(prompts[0] if prompts else None)
    forced_set = load_evalset(evalset) if evalset is not None else None
    jobs: list[tuple[Any, Any, Any, Any]] = []
    for path in prompts or []:
        git = None
        if ref is not None:
            from promptctl.versions import prompt_at_ref

            at = prompt_at_ref(path, ref, with_evalset=forced_set is None)
            prompt, the_set, git = at.prompt, at.evalset, at.git
        else:
            prompt = load_prompt(path)
            the_set = None
        models = model or ([prompt.model] if prompt.model else [])
        if not models:
            raise InputError("no model: the prompt names none", file=prompt.path,
                             fix="add model: to the prompt file or pass --model")
        the_set = forced_set or the_set
        if the_set is None:
            if prompt.evalset is None:
                raise InputError("no eval set: the prompt names none", file=prompt.path,
                                 fix="add evalset: to the prompt file or pass --evalset FILE")
            the_set = prompt.load_evalset()
        jobs.extend((prompt, the_set, resolve_model(m, config), git) for m in models)
    options = EvalOptions(concurrency=concurrency, limit=limit, repeat=repeat,
                          use_cache=not no_cache, cache_only=cache_only, rpm=rpm, tpm=tpm)
    store = open_project_store(config)
    if dry_run:
        from promptctl.estimate import estimate
        from promptctl.render.terminal import dry_run_table

        plans = [estimate(p, s, r, config=config, store=store, options=options) for p, s, r, _ in jobs]
        if json_out:
            typer.echo(dumps({"dry_run": plans}))
        else:
            dry_run_table(console(), plans)
        return
    out = console()
    done: list[dict[str, Any]] = []
    current: list[str] = []
    show_bar = not json_out and is_terminal(__import__("sys").stderr)

    def one(label: str, call: Any) -> None:
        if show_bar:
            with _Bar(label) as bar:
                run = call(bar)
        else:
            run = call(None)
        done.append(run)
        if not json_out:
            run_summary(out, run)
            out.print()

    try:
        if resume is not None:
            one(f"resume {resume}", lambda bar: resume_eval(
                resume, store=store, config=config, options=options, progress=bar,
                on_start=current.append))
        for prompt, the_set, resolved, git in jobs:
            one(f"{prompt.name} · {resolved.spec}", lambda bar, p=prompt, s=the_set, r=resolved, g=git:
                run_eval(p, r, store=store, config=config, evalset=s, options=options, progress=bar,
                         on_start=current.append, git=g))
    except ProviderError as exc:
        # The endpoint or a sender process failed mid-run: the run keeps what was answered.
        if current and (not done or done[-1]["id"] != current[-1]):
            exc.message += (f"\n  the rows answered so far are stored in run {current[-1]}; finish "
                            f"it with: promptctl eval --resume {current[-1]}")
        raise
    except KeyboardInterrupt:
        run_id = current[-1] if current else None
        if json_out and done:
            typer.echo(dumps({"runs": [run_json(r) for r in done]}))
        if run_id is None:
            raise fail("interrupted before any run started", 130) from None
        raise fail(f"interrupted: the rows answered so far are stored in run {run_id}; finish it "
                   f"with: promptctl eval --resume {run_id}", 130) from None
    if json_out:
        typer.echo(dumps({"runs": [run_json(r) for r in done]}))
    failed = [r for r in done if (r.get("summary") or {}).get("errors", 0)
              + (r.get("summary") or {}).get("fewshot_errors", 0)]
    if failed:
        errors = sum(r["summary"]["errors"] + r["summary"]["fewshot_errors"] for r in failed)
        again = "; ".join(f"promptctl eval --resume {r['id']}" for r in failed)
        raise fail(f"{errors} request(s) failed after every retry; they are stored as errors and "
                   f"not scored (see `promptctl show RUN`). Try them again with: {again}", 3)
