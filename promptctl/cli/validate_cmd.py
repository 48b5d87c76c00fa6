"""`promptctl validate` and `promptctl init`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from promptctl.cli.common import handle_errors, project
from promptctl.errors import EXIT_INPUT, PromptctlError, display_path

EVALSET_SUFFIXES = (".jsonl", ".csv", ".yaml", ".yml")


def _shown(path: Path) -> Path:
    """`path` relative to the current directory when it is below it, as a user would type it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in EVALSET_SUFFIXES)


def _discover(root: Path) -> list[Path]:
    from promptctl.project import EVALSETS_DIR, target_files

    found = target_files(root)
    if (root / EVALSETS_DIR).is_dir():
        found += _files_in(root / EVALSETS_DIR)
    return [_shown(p) for p in found]


def _expand(paths: list[Path]) -> list[Path]:
    """Named files as given; a named directory stands for the prompt and eval set files in it."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = _files_in(path)
            out.extend(inside if inside else [path])
        else:
            out.append(path)
    return out


def _kind(path: Path) -> str:
    """Whether a file is a prompt or an eval set: by extension, then folder, then content,
    as the target loader tells them apart (`target.is_evalset_file`)."""
    from promptctl.target import is_evalset_file

    return "evalset" if is_evalset_file(path) else "prompt"


def _unreviewed(count: int) -> str:
    return f", {count} unreviewed (reviewed: false, not scored until checked)" if count else ""


def check_file(path: Path) -> tuple[str, int]:
    """Validate one prompt (with its eval set, every row rendered) or eval set; nothing is
    sent. Returns what it is, and how many of its eval set's rows are unreviewed."""
    from promptctl.agents import Agent
    from promptctl.engine.plan import plan_requests
    from promptctl.errors import InputError
    from promptctl.evalsets import EvalSet, load_evalset
    from promptctl.pipelines import Pipeline
    from promptctl.target import evalset_of, load_target

    if path.is_dir():
        raise InputError("no prompt or eval set files in this directory", file=path,
                         fix="name .yaml prompt files or .jsonl, .yaml, .csv eval set files")
    if path.exists() and path.suffix.lower() not in EVALSET_SUFFIXES:
        raise InputError(f"not a prompt or eval set file (extension {path.suffix or '(none)'!r})",
                         file=path, fix="prompts are .yaml/.yml files; eval sets are .jsonl, "
                         ".yaml/.yml or .csv files")
    if _kind(path) == "evalset":
        evalset = load_evalset(path)
        return f"eval set, {len(evalset)} rows{_unreviewed(evalset.unreviewed)}", evalset.unreviewed
    target = load_target(path)
    if target.kind == "pipeline":
        assert isinstance(target, Pipeline)
        what = f"pipeline, {len(target.steps)} steps"
    elif target.kind == "agent":
        assert isinstance(target, Agent)
        what = f"agent ({target.protocol}), {len(target.tools)} tools"
    else:
        what = f"prompt, {len(target.examples)} few-shot examples"
    if target.evalset is None:
        # Still checks its metrics (a scorer that does not load, a judge that does not exist).
        plan_requests(target, EvalSet(path=path, version="", rows=()))
        return f"{what}, no eval set named", 0
    evalset = evalset_of(target)
    plan_requests(target, evalset)
    done = "renders" if target.kind == "prompt" else "checked"
    return (f"{what}, every row of {target.evalset.name} ({len(evalset)}) {done}"
            f"{_unreviewed(evalset.unreviewed)}", evalset.unreviewed)


def _report_once(results: list[dict[str, Any]]) -> None:
    """An eval set's error is reported once, by the eval set itself when it is validated too:
    a prompt that names it then says that its eval set is invalid, and where."""
    validated = {r["file"] for r in results}
    for r in results:
        if r["ok"] or r["error_file"] in (None, r["file"]) or r["error_file"] not in validated:
            continue
        where = r["error_file"] + (f":{r['line']}" if r["line"] else "")
        r["error"] = (f"{r['file']}: the eval set it names has an error (reported for "
                      f"{where})")
        r["duplicate_of"] = r["error_file"]


@handle_errors
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(
        help="Prompt and eval set files (default: prompts/ and evalsets/ of the project).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check prompt and eval set files without calling any model.

    Prompts are checked for schema, unknown keys, a compiling pattern, and that
    every message renders for every row of their eval set and every few-shot
    example. Exit 2 if anything is wrong.
    """
    from promptctl.render.jsonout import dumps
    from promptctl.render.terminal import console

    config = project()
    files = _expand(list(paths)) if paths else _discover(config.root)
    if not files:
        raise PromptctlError("nothing to validate: no prompts/ or evalsets/ here",
                             fix="pass files: promptctl validate prompts/NAME.yaml")
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            detail, unreviewed = check_file(path)
            results.append({"file": display_path(path), "ok": True, "detail": detail,
                            "unreviewed": unreviewed})
        except PromptctlError as exc:
            # `file` is the file named on the command line; the error's own file
            # may differ (the eval set a prompt names).
            results.append({"file": display_path(path), "ok": False, "error": str(exc),
                            "message": exc.message,
                            "error_file": display_path(exc.file) if exc.file else None,
                            "line": exc.line, "fix": exc.fix})
    _report_once(results)
    bad = [r for r in results if not r["ok"]]
    if json_out:
        typer.echo(dumps({"ok": not bad, "files": results}))
    else:
        out, err = console(), console(stderr=True)
        from rich.markup import escape

        for r in results:
            if r["ok"]:
                out.print(f"[green]ok[/]     {escape(r['file'])}: {escape(r['detail'])}")
            else:
                err.print(f"[bold red]error[/]  {escape(r['error'])}", soft_wrap=True)
    if bad:
        raise typer.Exit(EXIT_INPUT)


@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    github: Annotated[bool, typer.Option(
        "--github", help="Also write .github/workflows/promptctl.yml, which runs `promptctl "
        "check` on pull requests; in an existing project, write only that.")] = False,
) -> None:
    """Scaffold promptctl.yaml, prompts/ and evalsets/ with one working example."""
    from promptctl.scaffold import next_steps, scaffold

    created = []
    scaffolded = True
    if github:
        from promptctl.ci_templates import check_workflow_free, is_project, write_workflow

        check_workflow_free(directory)
        scaffolded = not is_project(directory)
        if scaffolded:
            created += scaffold(directory)
        created.append(write_workflow(directory))
    else:
        created += scaffold(directory)
    for path in created:
        typer.echo(f"created {path}")
    typer.echo(next_steps(directory, created, scaffolded=scaffolded))
