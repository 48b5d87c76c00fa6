"""What to evaluate: targets (prompts and pipelines, as in the work tree or at a git ref) x
models, each with its eval set, and how many requests to keep in flight.

The "no eval set" and "no model" rules are the target loader's (`promptctl.target`); the
default concurrency is decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptctl.config import DEFAULT_CONCURRENCY, Config
from promptctl.evalsets import EvalSet, load_evalset
from promptctl.gitinfo import GitState
from promptctl.project import check_belongs
from promptctl.providers import ResolvedModel, resolve_model
from promptctl.target import Target, evalset_of, load_target, model_of, target_at_ref


@dataclass(frozen=True)
class Job:
    """One run to make: a target version, its eval set, a model. `git` is set for a target
    read from git at a ref; None means the work tree's state when the run starts."""

    target: Target
    evalset: EvalSet
    resolved: ResolvedModel
    git: GitState | None = None


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


def build_jobs(paths: Sequence[Path], *, models: Sequence[str], evalset: Path | None,
               ref: str | None, config: Config) -> list[Job]:
    """One job per target and model, for any mix of prompt and pipeline files, everything
    loaded and checked before any run starts."""
    forced = load_evalset(evalset) if evalset is not None else None
    jobs: list[Job] = []
    for path in paths:
        check_belongs(path, config)
        git = None
        the_set: EvalSet | None = None
        if ref is not None:
            at = target_at_ref(path, ref, with_evalset=forced is None)
            target, the_set, git = at.target, at.evalset, at.git
        else:
            target = load_target(path, config.root)
        specs = list(models) or [model_of(target)]
        the_set = forced or the_set or evalset_of(target)
        jobs.extend(Job(target, the_set, resolve_model(m, config), git) for m in specs)
    return jobs
