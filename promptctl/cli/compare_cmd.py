"""`promptctl diff` and `promptctl history`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.errors import InputError

if TYPE_CHECKING:
    from promptctl.config import Config
    from promptctl.store import Store


def _prompt_name(prompt: str | None) -> tuple[str | None, Path | None]:
    if prompt is None:
        return None, None
    path = Path(prompt)
    if path.is_file():
        from promptctl.prompts import load_prompt

        return load_prompt(path).name, path
    return prompt, None


def _side(store: Store, config: Config, ref: str, prompt: str | None, model: str | None) -> str:
    """A run id for REF: a stored run id (or prefix), else a git ref of `prompt`."""
    from promptctl.compare import find_run, resolve_ref

    try:
        return str(store.get_run(ref)["id"])
    except InputError:
        if prompt is None:
            raise InputError(f"{ref!r} is not a stored run id",
                             fix="list runs with `promptctl runs`, or pass --prompt NAME to "
                             "compare git refs") from None
    commit = resolve_ref(config.root, ref)
    run = find_run(store, prompt, commit=commit, model=model)
    if run is None:
        model_flag = f" --model {model}" if model else ""
        raise InputError(f"no stored run of {prompt!r} at {ref} ({commit[:12]})"
                         + (f" with model {model}" if model else ""),
                         fix=f"evaluate it first: promptctl eval prompts/{prompt}.yaml --ref {ref}"
                         f"{model_flag}")
    return str(run["id"])


@handle_errors
def diff(
    a: Annotated[str | None, typer.Argument(help="Run id (or prefix), or a git ref with --prompt.")] = None,
    b: Annotated[str | None, typer.Argument(help="Run id (or prefix), or a git ref with --prompt.")] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt name or file, for git refs or models.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Once: the model of both sides. Twice: compare two models at the "
        "current prompt version.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown.")] = False,
) -> None:
    """Compare run B against run A, row by row.

    Per metric: A, B, delta, a 95% paired bootstrap interval of the delta and a
    p-value (exact McNemar for 0/1 scores, paired permutation for continuous
    ones); then the rows that flipped.
    """
    from promptctl.compare import compare_runs, find_run
    from promptctl.render.compare import diff_markdown, diff_terminal
    from promptctl.render.jsonout import dumps
    from promptctl.render.terminal import console

    config = project()
    store = open_project_store(config)
    name, path = _prompt_name(prompt)
    models = model or []
    if len(models) == 2 and a is None and b is None:
        if name is None:
            raise InputError("comparing two models needs --prompt", fix="add --prompt NAME")
        version = None
        if path is not None:
            from promptctl.prompts import load_prompt

            version = load_prompt(path).version
        ids = []
        for m in models:
            run = find_run(store, name, model=m, prompt_version=version)
            if run is None:
                raise InputError(f"no stored run of {name!r} with model {m}",
                                 fix=f"evaluate it first: promptctl eval prompts/{name}.yaml --model {m}")
            ids.append(run["id"])
        a_id, b_id = ids
    elif a is not None and b is not None and len(models) <= 1:
        one = models[0] if models else None
        a_id = _side(store, config, a, name, one)
        b_id = _side(store, config, b, name, one)
    else:
        raise InputError("diff needs two runs (A B), or --prompt with --model twice",
                         fix="e.g. promptctl diff RUN_A RUN_B, promptctl diff main HEAD --prompt NAME, "
                         "or promptctl diff --prompt NAME -m gpt-4o-mini -m gpt-4o")
    result: dict[str, Any] = compare_runs(store, a_id, b_id)
    if json_out:
        typer.echo(dumps(result))
    elif markdown:
        typer.echo(diff_markdown(result), nl=False)
    else:
        diff_terminal(console(), result)


@handle_errors
def history(
    prompt: Annotated[str, typer.Argument(help="Prompt name or file.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Metrics of a prompt across its versions (commits) and models, newest first."""
    from promptctl.compare import history as build
    from promptctl.render.compare import history_terminal
    from promptctl.render.jsonout import dumps
    from promptctl.render.terminal import console

    config = project()
    store = open_project_store(config)
    name, _ = _prompt_name(prompt)
    assert name is not None
    result = build(store, name, model=model, root=config.root)
    if json_out:
        typer.echo(dumps(result))
    else:
        history_terminal(console(), result)
