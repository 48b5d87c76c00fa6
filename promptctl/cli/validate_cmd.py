"""`promptctl validate` and `promptctl init`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from promptctl.cli.common import handle_errors, project
from promptctl.errors import PromptctlError


def _discover(root: Path) -> list[Path]:
    found = sorted((root / "prompts").glob("*.y*ml")) if (root / "prompts").is_dir() else []
    if (root / "evalsets").is_dir():
        found += sorted(p for p in (root / "evalsets").iterdir()
                        if p.suffix.lower() in (".jsonl", ".csv", ".yaml", ".yml"))
    return found


def _kind(path: Path) -> str:
    """A .yaml file is a prompt if its top level is a mapping, an eval set if a list."""
    if path.suffix.lower() in (".jsonl", ".csv"):
        return "evalset"
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            head = path.read_bytes()[:65536].decode("utf-8", "replace")
        except OSError:
            return "prompt"
        for line in head.splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith(("#", "---")):
                return "evalset" if stripped.startswith("- ") or stripped == "-" else "prompt"
    return "prompt"


def check_file(path: Path) -> str:
    """Validate one prompt (with its eval set, every row rendered) or eval set; nothing is sent."""
    from promptctl.evalsets import load_evalset
    from promptctl.prompts import load_prompt
    from promptctl.runner import plan

    if _kind(path) == "evalset":
        evalset = load_evalset(path)
        return f"eval set, {len(evalset)} rows"
    prompt = load_prompt(path)
    if prompt.evalset is None:
        plan_rows = len(prompt.examples)
        from promptctl.evalsets import EvalSet

        plan(prompt, EvalSet(path=path, version="", rows=()))
        return f"prompt, {plan_rows} few-shot examples, no eval set named"
    evalset = load_evalset(prompt.evalset)
    plan(prompt, evalset)
    return (f"prompt, {len(prompt.examples)} few-shot examples, every row of "
            f"{prompt.evalset.name} ({len(evalset)}) renders")


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
    files = list(paths) if paths else _discover(config.root)
    if not files:
        raise PromptctlError("nothing to validate: no prompts/ or evalsets/ here",
                             fix="pass files: promptctl validate prompts/NAME.yaml")
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            results.append({"file": str(path), "ok": True, "detail": check_file(path)})
        except PromptctlError as exc:
            results.append({"file": str(path), "ok": False, "error": str(exc),
                            "line": exc.line})
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
        raise typer.Exit(2)


@handle_errors
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    github: Annotated[bool, typer.Option(
        "--github", help="Also write .github/workflows/promptctl.yml, which runs `promptctl "
        "check` on pull requests; in an existing project, write only that.")] = False,
) -> None:
    """Scaffold promptctl.yaml, prompts/ and evalsets/ with one working example."""
    from promptctl.scaffold import scaffold

    created = []
    if github:
        from promptctl.ci_templates import check_workflow_free, is_project, write_workflow

        check_workflow_free(directory)
        if not is_project(directory):
            created += scaffold(directory)
        created.append(write_workflow(directory))
    else:
        created += scaffold(directory)
    for path in created:
        typer.echo(f"created {path}")
