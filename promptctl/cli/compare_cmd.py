"""`promptctl diff` and `promptctl history`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from promptctl.cli.common import handle_errors, open_project_store, project
from promptctl.errors import InputError

if TYPE_CHECKING:
    from promptctl.config import Config
    from promptctl.store import Store


def _prompt_arg(prompt: str | None, root: Path) -> tuple[str | None, Path | None]:
    """The prompt's name and file: PROMPT is a file, or a name (whose file is prompts/NAME.yaml
    when that exists)."""
    if prompt is None:
        return None, None
    path = Path(prompt)
    if path.is_file():
        from promptctl.prompts import load_prompt

        try:
            return load_prompt(path).name, path
        except InputError:
            return path.stem, path  # a file mid-edit still names its runs by its stem
    for candidate in (root / "prompts" / f"{prompt}.yaml", root / "prompts" / f"{prompt}.yml"):
        if candidate.is_file():
            return prompt, candidate
    return prompt, None


def _shown(path: Path | None, name: str, root: Path) -> str:
    """The prompt file as the user would type it."""
    if path is None:
        return f"prompts/{name}.yaml"
    for base in (Path.cwd(), root):
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


class _Sides:
    """Finds (or, with --run-missing, makes) the run standing for each side of a diff."""

    def __init__(self, store: Store, config: Config, name: str | None, path: Path | None,
                 run_missing: bool, say: Callable[[str], None]) -> None:
        self.store, self.config, self.name, self.path = store, config, name, path
        self.run_missing, self.say = run_missing, say
        self.notes: list[str] = []
        self.version: str | None = None

    def _eval_command(self, ref: str | None, model: str | None) -> str:
        assert self.name is not None
        parts = ["promptctl", "eval", _shown(self.path, self.name, self.config.root)]
        if ref is not None:
            parts += ["--ref", ref]
        if model is not None:
            parts += ["--model", model]
        return " ".join(shlex.quote(p) for p in parts)

    def by_ref(self, ref: str, model: str | None) -> str:
        """A stored run id (or unique prefix), else the run of the prompt at git ref `ref`."""
        from promptctl.compare import resolve_ref, run_at_commit

        try:
            return str(self.store.get_run(ref)["id"])
        except InputError as exc:
            if self.name is None:
                if "ambiguous" in str(exc):
                    raise
                raise InputError(f"{ref!r} is not a stored run id",
                                 fix="list runs with `promptctl runs`, or pass --prompt NAME to "
                                 "compare the prompt at two git refs") from None
        commit = resolve_ref(self.config.root, ref)
        at, problem = None, None
        if self.path is not None:
            from promptctl.versions import prompt_at_ref

            try:
                at = prompt_at_ref(self.path, commit)
            except InputError as exc:
                problem = exc
                try:  # the eval set may be what is missing at that ref
                    at = prompt_at_ref(self.path, commit, with_evalset=False)
                except InputError:
                    at = None
        # Without --model each side is the model its own version of the file names.
        wanted = model or (at.prompt.model if at is not None else None)
        run, note = run_at_commit(self.store, self.name, commit, model=wanted,
                                  prompt_version=at.prompt.version if at else None,
                                  evalset_version=at.evalset.version if at and at.evalset else None)
        if run is None and model is None and wanted is not None:
            run, note = run_at_commit(self.store, self.name, commit,
                                      prompt_version=at.prompt.version if at else None)
        if run is not None:
            if note:
                self.notes.append(note)
            return str(run["id"])
        missing = (f"no stored run of {self.name!r} at {ref} ({commit[:12]})"
                   + (f" with model {wanted}" if wanted else ""))
        command = self._eval_command(ref, model)
        if not self.run_missing:
            raise InputError(missing, fix=f"evaluate it first: {command}  (or add --run-missing "
                             "to diff)")
        if problem is not None:
            raise problem
        if at is None:
            raise InputError(f"{missing}, and --run-missing needs the prompt file",
                             fix=f"pass --prompt prompts/{self.name}.yaml, or run: {command}")
        if at.evalset is None:
            raise InputError(f"the prompt at {ref} names no eval set", file=self.path,
                             fix=f"run: {command} --evalset FILE")
        self.say(f"{missing}: evaluating it now ({command})")
        return self._evaluate(at.prompt, at.evalset, wanted, at.git, f"at {ref}")

    def by_model(self, model: str) -> str:
        """The run of the prompt's current version with `model`."""
        from promptctl.compare import find_run

        assert self.name is not None
        prompt = None
        if self.path is not None:
            from promptctl.prompts import load_prompt

            prompt = load_prompt(self.path)
        run = find_run(self.store, self.name, model=model,
                       prompt_version=prompt.version if prompt else self.version)
        if run is not None:
            return str(run["id"])
        command = self._eval_command(None, model)
        missing = f"no stored run of {self.name!r} with model {model}"
        if prompt is not None:
            missing += f" at its current version ({prompt.version[:12]})"
        if not self.run_missing or prompt is None:
            raise InputError(missing, fix=f"evaluate it first: {command}"
                             + ("  (or add --run-missing to diff)" if prompt else ""))
        self.say(f"{missing}: evaluating it now ({command})")
        return self._evaluate(prompt, None, model, None, "now")

    def are_models(self, refs: list[str]) -> bool:
        """True when every one of `refs` is neither a run id nor a git ref, but a model that
        has stored runs of the prompt (`diff gpt-4o-mini gpt-4o --prompt NAME`)."""
        from promptctl.compare import resolve_ref

        if self.name is None:
            return False
        models = {r["model"] for r in self.store.list_runs(self.name)}
        for ref in refs:
            if ref not in models:
                return False
            try:
                self.store.get_run(ref)
                return False
            except InputError:
                pass
            try:
                resolve_ref(self.config.root, ref)
                return False
            except InputError:
                pass
        return True

    def common_version(self, models: list[str]) -> None:
        """Without the prompt file: the newest prompt version every model has a run of."""
        if self.path is not None:
            return
        assert self.name is not None
        runs = [r for r in self.store.list_runs(self.name) if r["status"] == "complete"]
        for run in runs:  # newest first
            version = run["prompt_version"]
            if all(any(r["model"] == m and r["prompt_version"] == version for r in runs)
                   for m in models):
                self.version = version
                return
        raise InputError(f"no version of {self.name!r} has stored runs with both "
                         f"{' and '.join(models)}",
                         fix=f"evaluate them first: {self._eval_command(None, models[0])}, and "
                         f"the same with --model {models[1]}")

    def _evaluate(self, prompt: Any, evalset: Any, model: str | None, git: Any,
                  where: str) -> str:
        from promptctl.providers import resolve_model
        from promptctl.runner import run_eval

        spec = model or prompt.model
        if not spec:
            raise InputError("no model: the prompt names none", file=self.path,
                             fix="pass --model")
        run = run_eval(prompt, resolve_model(spec, self.config), store=self.store,
                       config=self.config, evalset=evalset, git=git)
        errors = (run.get("summary") or {}).get("errors", 0)
        self.notes.append(f"run {run['id']} was evaluated {where} for this diff"
                          + (f"; {errors} request(s) failed and are not compared" if errors else ""))
        return str(run["id"])


@handle_errors
def diff(
    a: Annotated[str | None, typer.Argument(
        help="Run id (or prefix); with --prompt also a git ref (main, HEAD~1, a sha) or a "
        "model.")] = None,
    b: Annotated[str | None, typer.Argument(
        help="Run id (or prefix); with --prompt also a git ref or a model.")] = None,
    prompt: Annotated[str | None, typer.Option(
        help="Prompt file or name: needed for git refs and models.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Once: the model of both sides. Twice: compare the two models at "
        "the prompt's current version.")] = None,
    run_missing: Annotated[bool, typer.Option(
        "--run-missing", help="Evaluate a side that has no stored run (like eval --ref).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown.")] = False,
) -> None:
    """Compare run B against run A, row by row.

    Per metric: A, B, delta, a 95% paired bootstrap interval of the delta and a
    p-value (exact McNemar for 0/1 scores, paired permutation for continuous
    ones); then the rows that flipped. A git ref with no stored run is an error
    that names the `eval --ref` command to run, or is evaluated with
    --run-missing.
    """
    from promptctl.compare import compare_runs
    from promptctl.render.jsonout import dumps

    if json_out and markdown:
        raise InputError("--json and --markdown are two outputs", fix="choose one")
    config = project()
    store = open_project_store(config)
    name, path = _prompt_arg(prompt, config.root)

    def say(message: str) -> None:
        from promptctl.render.terminal import console

        console(stderr=True).print(message, markup=False, soft_wrap=True)

    sides = _Sides(store, config, name, path, run_missing, say)
    models = model or []
    if len(models) > 2:
        raise InputError("--model at most twice", fix="diff compares two sides")
    if len(models) == 2 and a is None and b is None:
        if name is None:
            raise InputError("comparing two models needs --prompt",
                             fix=f"promptctl diff --prompt NAME -m {models[0]} -m {models[1]}")
        sides.common_version(models)
        a_id, b_id = sides.by_model(models[0]), sides.by_model(models[1])
    elif a is not None and b is not None and not models and sides.are_models([a, b]):
        sides.common_version([a, b])
        a_id, b_id = sides.by_model(a), sides.by_model(b)
    elif a is not None and b is not None and len(models) <= 1:
        one = models[0] if models else None
        a_id, b_id = sides.by_ref(a, one), sides.by_ref(b, one)
    else:
        raise InputError("diff needs two runs (A B), or --prompt with --model twice",
                         fix="e.g. promptctl diff RUN_A RUN_B, promptctl diff main HEAD --prompt NAME, "
                         "or promptctl diff --prompt NAME -m gpt-4o-mini -m gpt-4o")
    result: dict[str, Any] = compare_runs(store, a_id, b_id)
    result["warnings"] = sides.notes + result["warnings"]
    if json_out:
        typer.echo(dumps(result))
    elif markdown:
        from promptctl.render.compare import diff_markdown

        typer.echo(diff_markdown(result), nl=False)
    else:
        from promptctl.render.compare import diff_terminal
        from promptctl.render.terminal import console

        diff_terminal(console(), result)


@handle_errors
def history(
    prompt: Annotated[str, typer.Argument(help="Prompt file or name.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Metrics of a prompt across its versions (commits) and models, newest first.

    One line per prompt version with the commit, date, author and subject it
    ran at, and a trend line per metric.
    """
    from promptctl.compare import history as build
    from promptctl.render.jsonout import dumps

    config = project()
    store = open_project_store(config, create=False)
    name, _ = _prompt_arg(prompt, config.root)
    assert name is not None
    result = build(store, name, model=model, root=config.root)
    if json_out:
        typer.echo(dumps(result))
    else:
        from promptctl.render.compare import history_terminal
        from promptctl.render.terminal import console

        history_terminal(console(), result)
