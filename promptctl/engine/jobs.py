"""What to evaluate: prompts (as in the work tree or at a git ref) x models, each with its
eval set, and how many requests to keep in flight.

The "no eval set", "no model" and default-concurrency decisions live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptctl.config import DEFAULT_CONCURRENCY, Config
from promptctl.errors import InputError, display_path
from promptctl.evalsets import EvalSet, load_evalset, load_evalset_bytes
from promptctl.gitinfo import GitState, open_repo
from promptctl.prompts import Prompt, load_prompt, parse_prompt
from promptctl.providers import ResolvedModel, resolve_model


@dataclass(frozen=True)
class Job:
    """One run to make: a prompt version, its eval set, a model. `git` is set for a prompt
    read from git at a ref; None means the work tree's state when the run starts."""

    prompt: Prompt
    evalset: EvalSet
    resolved: ResolvedModel
    git: GitState | None = None


@dataclass(frozen=True)
class AtRef:
    """A prompt, its eval set (when it names one and it exists there) and the commit."""

    prompt: Prompt
    evalset: EvalSet | None
    git: GitState


def evalset_of(prompt: Prompt) -> EvalSet:
    """The eval set the prompt names, or an error naming the prompt file and line."""
    if prompt.evalset is None:
        raise InputError("no eval set: the prompt names none", file=prompt.path,
                         fix="add evalset: ../evalsets/NAME.jsonl to the prompt file, or pass "
                         "--evalset FILE")
    if not prompt.evalset.exists() or prompt.evalset.is_dir():
        what = "is a directory" if prompt.evalset.is_dir() else "does not exist"
        raise InputError(f"the eval set named by evalset: {what}: {display_path(prompt.evalset)}",
                         file=prompt.path, line=prompt.evalset_line,
                         fix="fix the evalset: path (it is relative to the prompt file's folder), "
                         "or pass --evalset FILE")
    # Read inside the project only, as a regular file of sane size (see `files`).
    return prompt.load_evalset()


def model_of(prompt: Prompt, override: str | None = None) -> str:
    """The model to run: --model, else the prompt's `model:`."""
    spec = override or prompt.model
    if not spec:
        raise InputError("no model: the prompt names none", file=prompt.path,
                         fix="add model: to the prompt file, or pass --model")
    return spec


def concurrency_for(requested: int | None, resolved: ResolvedModel, config: Config) -> int:
    """Requests in flight: --concurrency, else the endpoint's, else promptctl.yaml's (for
    the OpenAI API), else the backend's default."""
    if requested:
        return requested
    endpoint = resolved.endpoint
    if endpoint is not None and endpoint.concurrency:
        return endpoint.concurrency
    if endpoint is None and config.concurrency:
        return config.concurrency
    return resolved.default_concurrency or DEFAULT_CONCURRENCY


def at_ref(path: Path, ref: str, *, with_evalset: bool = True) -> AtRef:
    """`path` as committed at `ref`, and its eval set at the same commit.

    Neither the work tree nor the index is touched, so this is safe in a dirty checkout
    and in CI.
    """
    repo = open_repo(path, purpose="--ref needs the prompt to live in a git work tree")
    commit = repo.resolve(ref)
    rel = _rel_in(path, repo.root)
    data = repo.read(commit, rel)
    if data is None:
        raise InputError(f"file did not exist at {ref} ({commit[:12]})", file=path,
                         fix="choose a ref where the file exists")
    prompt = parse_prompt(data, path)
    evalset = None
    if with_evalset and prompt.evalset is not None:
        set_rel = _rel_in(prompt.evalset, repo.root, referrer=prompt)
        set_data = repo.read(commit, set_rel)
        if set_data is None:
            raise InputError(f"the eval set {set_rel} did not exist at {ref} ({commit[:12]})",
                             file=path, line=prompt.evalset_line,
                             fix="choose a ref where it exists, or pass --evalset FILE")
        evalset = load_evalset_bytes(set_data, prompt.evalset)
    return AtRef(prompt, evalset, GitState(root=repo.root, commit=commit, dirty=False, branch=None))


def _rel_in(path: Path, root: Path, referrer: Prompt | None = None) -> str:
    import os

    absolute = Path(os.path.normpath(os.path.abspath(path)))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        if referrer is not None:
            raise InputError(f"evalset: points outside the repository ({display_path(path)})",
                             file=referrer.path, line=referrer.evalset_line,
                             fix="keep eval sets inside the repository") from None
        raise InputError("file is outside the git work tree", file=path,
                         fix="use a path inside the repository") from None


def build_jobs(paths: Sequence[Path], *, models: Sequence[str], evalset: Path | None,
               ref: str | None, config: Config) -> list[Job]:
    """One job per prompt and model, everything loaded and checked before any run starts."""
    from promptctl.project import check_belongs

    forced = load_evalset(evalset) if evalset is not None else None
    jobs: list[Job] = []
    for path in paths:
        check_belongs(path, config)
        git = None
        the_set: EvalSet | None
        if ref is not None:
            at = at_ref(path, ref, with_evalset=forced is None)
            prompt, the_set, git = at.prompt, at.evalset, at.git
        else:
            prompt = load_prompt(path, config.root)
            the_set = None
        specs = list(models) or [model_of(prompt)]
        the_set = forced or the_set or evalset_of(prompt)
        jobs.extend(Job(prompt, the_set, resolve_model(m, config), git) for m in specs)
    return jobs
