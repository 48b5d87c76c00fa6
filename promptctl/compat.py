"""`promptctl compat`: does the project still work on another model?

Every prompt, pipeline and agent file (of the project, or of the paths given) is
evaluated on model A and on model B through the one engine (`run_job`, so a
repeat is answered by the completion cache), both runs are stored, and B is
compared with A row by row (`compare.compare_runs`). The gates are `check`'s
`max_regression` gates (`gate.regression_gates`), with A as the baseline: a
drop beyond a file's limit fails when the paired test finds it significant, or
on the drop alone with `strict`. Absolute `min`/`max` thresholds are not
applied: they judge a prompt version, not a model change.

Both models replace whatever model a file names (that is the question asked);
a judge keeps its own model, so both sides are scored alike. A file that names
no eval set cannot be compared: it is reported as skipped. A file that cannot
be loaded, or whose eval set is missing, is an error (exit 2), as in `check`;
rows whose request failed on either model make the file a provider failure
(exit 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptctl.compare import compare_runs
from promptctl.config import Config
from promptctl.engine import EvalOptions, build_jobs, run_job
from promptctl.errors import EXIT_PROVIDER, InputError, PromptctlError
from promptctl.gate import DEFAULT_SIGNIFICANCE, exit_code, failed_rows_error, regression_gates, status_of
from promptctl.project import TARGET_SUFFIXES, is_target_file, relative, target_files
from promptctl.providers import resolve_model
from promptctl.results import CheckError, CompatResult, CompatSummary, PromptCheck, RowErrors
from promptctl.runs import row_errors
from promptctl.store import Store
from promptctl.target import is_evalset_file, load_target

EventFn = Callable[[str], None]


@dataclass
class CompatOptions:
    """What `promptctl compat` was asked to do."""

    from_model: str
    to_model: str
    paths: list[Path] = dataclasses.field(default_factory=list)
    significance: float = DEFAULT_SIGNIFICANCE
    strict: bool = False
    eval: EvalOptions = dataclasses.field(default_factory=EvalOptions)


def compat_files(paths: Sequence[Path], config: Config) -> list[Path]:
    """The target files to compare: the project's (prompts/, pipelines/, agents/) when no path
    is given; a file as it is; a folder's prompt, pipeline and agent files (the project's
    target folders for its root). Eval sets in a folder are left out."""
    if not paths:
        found = target_files(config.root)
        if not found:
            raise InputError("no prompt, pipeline or agent file in this project",
                             file=config.root, fix="add prompts/NAME.yaml, or name files: "
                             "promptctl compat --from A --to B FILE...")
        return found
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            if path.resolve() == config.root.resolve():
                inside = target_files(config.root)
            else:
                inside = sorted(p for p in path.iterdir()
                                if is_target_file(p) and not is_evalset_file(p))
            if not inside:
                raise InputError("no prompt, pipeline or agent file in this folder", file=path,
                                 fix=f"name a folder that holds {' or '.join(TARGET_SUFFIXES)} "
                                 "target files, or the files themselves")
            out += inside
        elif path.is_file():
            out.append(path)
        else:
            raise InputError("no such file or folder", file=path,
                             fix="name a prompt, pipeline or agent file, or a folder of them")
    return list(dict.fromkeys(p.resolve() for p in out))


def _error(exc: PromptctlError) -> CheckError:
    return CheckError(message=str(exc), exit_code=exc.exit_code,
                      kind="provider" if exc.exit_code == EXIT_PROVIDER else "input")


def _compare_one(path: Path, *, config: Config, store: Store, options: CompatOptions,
                 from_spec: str, to_spec: str, say: EventFn) -> PromptCheck:
    rel = relative(path, config.root) or path.as_posix()
    name, status = path.stem, "pass"
    reasons: tuple[str, ...] = ()
    runs: dict[str, str | None] = {"a": None, "b": None}
    errors = {"a": 0, "b": 0}
    metrics: dict[str, Any] = {}
    comparison = None
    gates = []
    error = None
    try:
        target = load_target(path, config.root)
        name = target.name
        if target.evalset is None:
            # Nothing to measure the change on: shown, never silently left out.
            reasons = (f"not compared: the {target.kind} names no eval set (add evalset: to "
                       "compare it)",)
            status = "skip"
        else:
            # eval's own job building: the same checks, eval set and model resolution.
            job_a, job_b = build_jobs([path], models=[options.from_model, options.to_model],
                                      evalset=None, ref=None, config=config)
            # The Batch API serves single requests: a pipeline's or agent's next request
            # depends on the answers before it, so those are sent as usual.
            eval_options = options.eval if target.kind == "prompt" else \
                dataclasses.replace(options.eval, batch=False)
            for side, job in (("a", job_a), ("b", job_b)):
                say(f"{name}: evaluating with {job.resolved.spec}")
                run = run_job(job, store=store, config=config, options=eval_options)
                runs[side] = run["id"]
                errors[side] = row_errors(run)
            metrics = run.get("metrics") or {}  # B's, as check reports the current run's
            diff = compare_runs(store, str(runs["a"]), str(runs["b"]),
                                significance=options.significance)
            # compare_runs warns that the models differ: here that is the question, not news.
            obvious = f"different models: {job_a.resolved.spec} vs {job_b.resolved.spec}"
            comparison = dataclasses.replace(diff.comparison(), warnings=tuple(
                w for w in diff.warnings if w != obvious))
            gates = regression_gates(target, comparison, significance=options.significance,
                                     strict=options.strict)
            failed = failed_rows_error(errors["b"], errors["a"])
            if failed is not None:
                raise failed
    except PromptctlError as exc:
        error = _error(exc)
    if status != "skip":
        status = status_of(error, gates)
    return PromptCheck(
        prompt=name, path=rel, new=False, reasons=reasons, status=status, model=to_spec,
        baseline_model=from_spec, current_run=runs["b"],
        current_source="evaluated" if runs["b"] else None, baseline_run=runs["a"],
        baseline_source="evaluated" if runs["a"] else None, metrics=metrics,
        comparison=comparison, gates=tuple(gates), warnings=(), error=error,
        row_errors=RowErrors(current=errors["b"], baseline=errors["a"]))


def run_compat(config: Config, store: Store, options: CompatOptions,
               on_event: EventFn | None = None) -> CompatResult:
    """Evaluate every file on both models, compare them, apply the regression gates."""
    if not 0 < options.significance < 1:
        raise InputError(f"significance must be between 0 and 1, not {options.significance}",
                         fix="e.g. --significance 0.05")
    # A model that cannot be resolved is the command line's error, not each file's.
    from_spec = resolve_model(options.from_model, config).spec
    to_spec = resolve_model(options.to_model, config).spec
    if from_spec == to_spec:
        raise InputError(f"--from and --to name the same model ({from_spec})",
                         fix="compare two different models, e.g. --from gpt-4o-mini --to gpt-4.1-mini")
    files = compat_files(options.paths, config)
    say = on_event or (lambda _msg: None)
    results = [_compare_one(p, config=config, store=store, options=options, from_spec=from_spec,
                            to_spec=to_spec, say=say) for p in files]
    counts = {s: sum(1 for r in results if r.status == s)
              for s in ("pass", "warn", "fail", "error", "skip")}
    return CompatResult(
        from_model=from_spec, to_model=to_spec, significance=options.significance,
        strict=options.strict, files=tuple(results),
        summary=CompatSummary(files=len(results), pass_=counts["pass"], warn=counts["warn"],
                              fail=counts["fail"], error=counts["error"], skip=counts["skip"]),
        exit_code=exit_code(results))
