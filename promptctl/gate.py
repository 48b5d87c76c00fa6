"""The CI gate behind `promptctl check`: which prompts a change affects, and whether they pass.

A prompt (or pipeline) is affected when one of its inputs differs between the
base commit and the work tree: its file, its eval set, and the files
`target.inputs_of` lists (a pipeline's prompts, judge prompts, scorers). For
each affected prompt the current version is evaluated (the completion cache
makes a re-run free), the baseline is taken from the store (a complete run of
the same version, which covers those files, eval set and model) or evaluated
from git's object store at the base commit, every input read there, and
the prompt's `thresholds` are applied:

- `{metric: {min, max}}` on the current value;
- `max_regression: {metric: limit}` on the drop versus the baseline. A drop
  beyond the limit fails only when the paired test of `promptctl diff` finds
  it significant at `significance` (default 0.05); otherwise it is a warning
  that shows its p-value. `strict` fails on the raw drop alone.

Exit codes, most important first: 2 when a prompt or eval set cannot be used
(or the command line is wrong), 3 when the provider failed (a raised
`ProviderError` or error rows in a run: the verdict would rest on missing
rows, and re-running may mend it), 1 when a gate failed, else 0.

What `run_check` returns is a `CheckResult` (promptctl.results): the CLI renders it
as a table, Markdown or JUnit XML, and its `to_json()` is the `--json` document.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl._yaml import decode_utf8, load_yaml_text
from promptctl.compare import compare_runs
from promptctl.config import CONFIG_FILE, ENV_CONFIG, Config, config_from_text
from promptctl.engine import EvalOptions
from promptctl.engine.lifecycle import run_eval
from promptctl.errors import (
    EXIT_GATE,
    EXIT_INPUT,
    EXIT_OK,
    EXIT_PROVIDER,
    InputError,
    PromptctlError,
    ProviderError,
)
from promptctl.files import MAX_EVALSET_BYTES, read_file
from promptctl.gitinfo import SHALLOW_FIX, Repo, open_repo
from promptctl.pipelines import is_pipeline_text
from promptctl.project import PROMPTS_DIR, TARGET_DIRS, TARGET_SUFFIXES, target_files
from promptctl.providers import resolve_model
from promptctl.results import (
    CheckBase,
    CheckConfig,
    CheckError,
    CheckHead,
    CheckResult,
    CheckSummary,
    Comparison,
    DiffResult,
    Gate,
    PromptCheck,
    PromptFile,
    RowErrors,
    interval,
    verdict,
)
from promptctl.runs import row_errors
from promptctl.selection import standing_run
from promptctl.store import RunRecord, Store
from promptctl.target import (
    Target,
    evalset_of,
    inputs_of,
    load_target,
    model_of,
    rel_in,
    target_at_ref,
)

DEFAULT_SIGNIFICANCE = 0.05
DEFAULT_BASES = ("origin/main", "main")
# Float noise in a delta must not turn "exactly at the limit" into a failure.
TOLERANCE = 1e-9

EventFn = Callable[[str], None]


@dataclass
class CheckOptions:
    """What `promptctl check` was asked to do."""

    base: str | None = None
    prompts: list[str] = field(default_factory=list)
    model: str | None = None
    significance: float = DEFAULT_SIGNIFICANCE
    strict: bool = False
    concurrency: int | None = None
    timeout: float | None = None
    max_response_mb: float | None = None


@dataclass(frozen=True)
class Base:
    """The commit the change is measured against, and how it was chosen."""

    ref: str
    commit: str
    how: str


@dataclass
class Candidate:
    """A prompt file of the work tree and what changed about it since the base."""

    path: Path
    rel: str
    base_rel: str | None
    reasons: list[str]

    @property
    def new(self) -> bool:
        return self.base_rel is None


# --- git ---------------------------------------------------------------------------------------


def resolve_base(repo: Repo, ref: str | None) -> Base:
    """`ref` as given, else the merge base of HEAD with origin/main (or main)."""
    head = repo.head()
    if head is None:
        raise InputError("the repository has no commit yet",
                         fix="commit the prompts first, or pass --base REF")
    if ref is not None:
        commit = repo.resolve(ref, context=" for --base",
                              fix="name a branch, tag or commit (in CI, fetch history: "
                              "actions/checkout with fetch-depth: 0)")
        return Base(ref=ref, commit=commit, how=f"--base {ref}")
    for candidate in DEFAULT_BASES:
        try:
            other = repo.resolve(candidate)
        except InputError:
            continue
        merge_base = repo.merge_base(head, other)
        if merge_base:
            return Base(ref=candidate, commit=merge_base, how=f"merge base of HEAD and {candidate}")
        if repo.shallow:
            raise InputError(f"HEAD and {candidate} have no common commit in this clone",
                             fix=SHALLOW_FIX)
    raise InputError("no base to compare with: neither origin/main nor main exists here",
                     fix="pass --base REF (a branch, tag or commit)"
                     + (f"; {SHALLOW_FIX}" if repo.shallow else ""))


def _rel(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def _read(path: Path) -> bytes | None:
    try:  # a regular file of a sane size only: a FIFO or /dev/zero committed here never ends
        return read_file(path, what="file", max_bytes=MAX_EVALSET_BYTES)
    except InputError:
        return None


# --- finding affected prompts ----------------------------------------------------------------


def _data(data: bytes, rel: str) -> Any:
    """A file's bytes as plain data, read as every prompt file is (`_yaml`: its limits, strict
    JSON values); None when they are not readable YAML."""
    try:
        return load_yaml_text(decode_utf8(data, rel), rel)[0]
    except InputError:
        return None


def _prompt_name(data: bytes | None, rel: str) -> str:
    """The `name:` of a prompt file's bytes, without validating the rest."""
    stem = Path(rel).stem
    if data is None:
        return stem
    raw = _data(data, rel)
    name = raw.get("name") if isinstance(raw, dict) else None
    return name if isinstance(name, str) and name else stem


def _evalset_rel(data: bytes, rel: str) -> str | None:
    """The eval set a prompt file's bytes name, relative to the repository root."""
    raw = _data(data, rel)
    evalset = raw.get("evalset") if isinstance(raw, dict) else None
    if not isinstance(evalset, str) or not evalset.strip():
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), evalset))
    return None if joined.startswith("..") or posixpath.isabs(joined) else joined


def _pipeline_prompts(data: bytes, rel: str) -> list[str]:
    """The prompt files a pipeline file's bytes name, relative to the repository root."""
    raw = _data(data, rel)
    steps = raw.get("steps") if isinstance(raw, dict) else None
    out: list[str] = []
    for step in steps if isinstance(steps, list) else []:
        named = step.get("prompt") if isinstance(step, dict) else None
        if isinstance(named, str) and named.strip():
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), named))
            if not joined.startswith("..") and not posixpath.isabs(joined):
                out.append(joined)
    return list(dict.fromkeys(out))


def _input_reasons(repo: Repo, commit: str, path: Path, base_path: Path) -> list[str] | None:
    """What changed among the files a target's result depends on besides its own file and
    eval set (`target.inputs_of`: a pipeline's prompts, judge prompts, scorers), between
    `commit` and the work tree; None when either version cannot be loaded."""
    root = repo.root
    try:
        now = inputs_of(load_target(path))[1:]
        then = inputs_of(target_at_ref(base_path, commit, with_evalset=False).target)[1:]
        now_rels = {rel_in(f, root): what for f, what in now}
        then_rels = {rel_in(f, root): what for f, what in then}
    except PromptctlError:
        return None
    reasons = []
    for rel, what in now_rels.items():
        if rel not in then_rels:
            reasons.append(f"{what} {rel} is new" if repo.read(commit, rel) is None
                           else f"uses {what} {rel}")
        elif _read(root / rel) != repo.read(commit, rel):
            reasons.append(f"{what} {rel} changed")
    reasons += [f"no longer uses {what} {rel}" for rel, what in then_rels.items()
                if rel not in now_rels]
    return reasons


def find_affected(repo: Repo, commit: str, selected: list[str]) -> tuple[
        list[Candidate], list[dict[str, Any]], list[dict[str, Any]]]:
    """(affected prompts, unchanged prompts, deleted prompts) between `commit` and the work tree.

    `selected` (paths or prompt names) narrows the prompts considered; deleted
    prompts are listed only when nothing is selected.
    """
    root = repo.root
    base_files: list[str] = []
    # Pipelines are checked like prompts: they live in pipelines/.
    current = target_files(root)
    for folder in TARGET_DIRS:
        base_files += list(repo.list_files(commit, folder, TARGET_SUFFIXES))
    current_rels = {_rel(p, root) for p in current}
    gone = [r for r in base_files if r not in current_rels]
    gone_by_name = {_prompt_name(repo.read(commit, r), r): r for r in gone}

    if selected:
        chosen: list[Path] = []
        for item in selected:
            path = Path(item)
            if path.is_file():
                chosen.append(path.resolve())
                continue
            named = [p for p in current if p.stem == item or _prompt_name(_read(p), p.name) == item]
            if not named:
                raise InputError(f"no prompt {item!r}: neither a file nor the name of a prompt in "
                                 f"{PROMPTS_DIR}/", fix="pass a prompt file path or a prompt name")
            chosen.extend(named)
        current = list(dict.fromkeys(chosen))

    affected: list[Candidate] = []
    unchanged: list[dict[str, Any]] = []
    renamed_from: set[str] = set()
    for path in current:
        rel = _rel(path, root)
        if rel is None:
            raise InputError("prompt file is outside the git work tree", file=path,
                             fix="check prompts that live in this repository")
        data = _read(path) or b""
        base_rel: str | None = rel
        base_data = repo.read(commit, rel)
        reasons: list[str] = []
        if base_data is None:
            moved = gone_by_name.get(_prompt_name(data, rel))
            if moved is not None:
                base_rel, base_data = moved, repo.read(commit, moved)
                renamed_from.add(moved)
                reasons.append(f"renamed from {moved}")
            else:
                base_rel = None
                reasons.append("new prompt")
        if base_data is not None and base_data != data:
            reasons.append("prompt file changed")
        inputs = _input_reasons(repo, commit, path, root / base_rel) \
            if base_data is not None and base_rel is not None else None
        if inputs is not None:
            reasons += inputs
        elif base_data is not None and is_pipeline_text(data):
            # Either version cannot be loaded (its error is reported when it is evaluated):
            # a pipeline's prompts are still read from its file.
            for prompt_rel in _pipeline_prompts(data, rel):
                then = repo.read(commit, prompt_rel)
                if then is None:
                    reasons.append(f"prompt {prompt_rel} is new")
                elif _read(root / prompt_rel) != then:
                    reasons.append(f"prompt {prompt_rel} changed")
        set_rel = _evalset_rel(data, rel)
        if base_data is not None and set_rel is not None:
            set_now = _read(root / set_rel)
            set_then = repo.read(commit, set_rel)
            if set_then is None:
                reasons.append(f"eval set {set_rel} is new")
            elif set_now != set_then:
                reasons.append(f"eval set {set_rel} changed")
        if reasons:
            affected.append(Candidate(path, rel, base_rel, reasons))
        else:
            unchanged.append({"prompt": _prompt_name(data, rel), "path": rel})
    deleted = [] if selected else [
        {"prompt": _prompt_name(repo.read(commit, r), r), "path": r}
        for r in gone if r not in renamed_from]
    return affected, unchanged, deleted


# --- baselines and gates ---------------------------------------------------------------------


def _num(value: float, near: float | None = None) -> str:
    """A number in a gate's message: at most 3 decimals, no trailing zeros, never "-0"; more
    digits when 3 would make it read as the limit it is compared with (`near`)."""
    if value != 0 and abs(value) < 0.001:
        return f"{value:.1g}"
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    if near is not None and value != near and text == _num(near):
        text = f"{value:.10g}"
    return "0" if text in ("-0", "") else text


def _p(p: float | None) -> str:
    if p is None:
        return "p unknown"
    return "p<0.001" if p < 0.001 else f"p={_num(p)}"


def absolute_gates(prompt: Target, run: RunRecord) -> list[Gate]:
    """One gate per `thresholds: {metric: {min|max: N}}` bound, on the current value."""
    metrics = run.get("metrics") or {}
    gates = []
    for metric, bounds in prompt.thresholds.items():
        if metric == "max_regression" or not isinstance(bounds, dict):
            continue
        result = metrics.get(metric) or {}
        value = result.get("value")
        for kind in ("min", "max"):
            if kind not in bounds:
                continue
            limit = float(bounds[kind])
            bound = "minimum" if kind == "min" else "maximum"
            if metric not in metrics:
                status, message = "fail", (f"{metric} is not computed by this prompt "
                                           "(add it to metrics:)")
            elif value is None:
                status, message = "fail", (f"{metric} has no value: no row gave a "
                                           "usable answer")
            elif (value >= limit - TOLERANCE) if kind == "min" else (value <= limit + TOLERANCE):
                status, message = "pass", (f"{metric} {_num(value, limit)} "
                                           f"{'meets' if kind == 'min' else 'is within'} the "
                                           f"{bound} {limit:g}")
            else:
                status, message = "fail", (f"{metric} {_num(value, limit)} is "
                                           f"{'below' if kind == 'min' else 'above'} the "
                                           f"{bound} {limit:g}")
            gates.append(Gate(id=f"{metric}.{kind}", metric=metric, kind=kind, limit=limit,
                              status=status, message=message, value=value,
                              ci95=interval(result.get("ci95")), n=result.get("n")))
    return gates


def regression_gates(prompt: Target, comparison: DiffResult | Comparison | None, *,
                     significance: float,
                     strict: bool, why_none: str = "no baseline") -> list[Gate]:
    """One gate per `max_regression: {metric: limit}`, on the paired comparison with the baseline.

    The drop is -delta for a metric where higher is better and +delta where
    lower is better. Beyond the limit it fails when p < significance (or
    always, with `strict`), and warns otherwise.
    """
    limits = prompt.thresholds.get("max_regression") or {}
    gates = []
    for metric, raw_limit in limits.items():
        limit = float(raw_limit)
        ident = f"{metric}.max_regression"
        entry = comparison.metrics.get(metric) if comparison is not None else None
        if comparison is None:
            gates.append(Gate(id=ident, metric=metric, kind="max_regression", limit=limit,
                              status="skip", message=f"not applied: {why_none}"))
            continue
        if entry is None or entry.delta is None:
            gates.append(Gate(id=ident, metric=metric, kind="max_regression", limit=limit,
                              status="skip", message=f"not applied: {metric} could not be "
                              "compared with the baseline (not computed on both sides, or too "
                              "few paired rows)"))
            continue
        higher = entry.higher_is_better
        delta = float(entry.delta)
        drop = -delta if higher else delta
        p = entry.p_value
        # How the value moved, in words: "accuracy fell by 0.04", "rmse rose by 0.2".
        moved = f"{metric} {'rose' if delta > 0 else 'fell'} by {_num(abs(delta), limit)}"
        beyond = f"{moved}, more than the limit {limit:g}"
        # The rule every report follows: the paired test decides (results.verdict).
        judged = verdict(delta, entry.ci95, p, higher_is_better=higher, significance=significance)
        # When the interval and the test disagree, say so after the verdict, in a sentence.
        why = f". {judged.note[:1].upper()}{judged.note[1:]}" if judged.note else ""
        if abs(delta) <= TOLERANCE:
            status, message = "pass", f"no change in {metric}"
        elif drop < 0:
            status, message = "pass", f"{moved}: better than the baseline"
        elif drop <= limit + TOLERANCE:
            status, message = "pass", f"{moved}, within the limit {limit:g}"
        elif strict:
            status, message = "fail", (f"{beyond} ({_p(p)}; --strict fails on the drop "
                                       "alone)")
        elif judged.significant:
            status, message = "fail", (f"{beyond}, and significantly ({_p(p)}, below "
                                       f"{significance:g}){why}")
        else:
            status, message = "warn", (f"{beyond}, but not significantly ({_p(p)}, not below "
                                       f"{significance:g}): could be noise; --strict would "
                                       f"fail it{why}")
        gates.append(Gate(id=ident, metric=metric, kind="max_regression", limit=limit,
                          status=status, message=message, value=entry.b, baseline=entry.a,
                          delta=delta, drop=drop, ci95=entry.ci95, p_value=p, test=entry.test,
                          n=entry.n, higher_is_better=higher, verdict=judged))
    return gates


def _trim_comparison(comparison: DiffResult) -> Comparison:
    return comparison.comparison()


@dataclass
class _Entry:
    """A prompt's check while it is being made; `result` freezes it."""

    prompt: str
    path: str
    new: bool
    reasons: list[str]
    model: str | None = None
    baseline_model: str | None = None
    current_run: str | None = None
    current_source: str | None = None
    baseline_run: str | None = None
    baseline_source: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    comparison: Comparison | None = None
    gates: list[Gate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: CheckError | None = None
    current_errors: int = 0
    baseline_errors: int = 0

    def result(self, status: str) -> PromptCheck:
        return PromptCheck(
            prompt=self.prompt, path=self.path, new=self.new, reasons=tuple(self.reasons),
            status=status, model=self.model, baseline_model=self.baseline_model,
            current_run=self.current_run, current_source=self.current_source,
            baseline_run=self.baseline_run, baseline_source=self.baseline_source,
            metrics=self.metrics, comparison=self.comparison, gates=tuple(self.gates),
            warnings=tuple(self.warnings), error=self.error,
            row_errors=RowErrors(current=self.current_errors, baseline=self.baseline_errors))


def _verdict(entry: _Entry) -> str:
    return status_of(entry.error, entry.gates)


def status_of(error: CheckError | None, gates: Sequence[Gate]) -> str:
    """A prompt's verdict from its error and gates: error, else fail, warn or pass."""
    if error is not None:
        return "error"
    statuses = {g.status for g in gates}
    if "fail" in statuses:
        return "fail"
    if "warn" in statuses:
        return "warn"
    return "pass"


def failed_rows_error(current: int, baseline: int) -> ProviderError | None:
    """The error for rows whose request failed after every retry, on either side: a verdict
    resting on missing rows is no verdict (exit 3, as a provider failure)."""
    failed_rows = current + baseline
    if not failed_rows:
        return None
    return ProviderError(f"{failed_rows} request(s) failed after every retry (current "
                         f"{current}, baseline {baseline}): the verdict would rest on "
                         "missing rows",
                         fix="re-run when the provider is back (answers so far are cached)")


def exit_code(prompts: Sequence[PromptCheck]) -> int:
    """2 input error, else 3 provider failure, else 1 failed gate, else 0."""
    codes = {p.error.exit_code for p in prompts if p.error is not None}
    if EXIT_INPUT in codes:
        return EXIT_INPUT
    if EXIT_PROVIDER in codes:
        return EXIT_PROVIDER
    if any(p.status == "fail" for p in prompts):
        return EXIT_GATE
    return EXIT_OK


# --- the check -------------------------------------------------------------------------------


def _baseline(path: Path, name: str, spec: str, entry: _Entry, *, base: Base,
              config: Config, store: Store, options: CheckOptions, eval_options: EvalOptions,
              say: EventFn) -> RunRecord:
    """The run of the prompt at the base commit: from the store, else evaluated from git."""
    at = target_at_ref(path, base.commit)
    if at.evalset is None:
        raise InputError("the base version names no eval set")
    # Without --model each side runs the model its own file names, so a change
    # of `model:` in the pull request is measured too.
    resolved = resolve_model(options.model or at.target.model or spec, config)
    entry.baseline_model = resolved.spec
    if resolved.spec != spec:
        entry.warnings.append(f"the change switches the model from {resolved.spec} to {spec}")
    found = standing_run(store, at.target.name, version=at.target.version,
                         evalset_version=at.evalset.version, model=resolved.spec,
                         base_url=resolved.cache_url, commit=base.commit, allow_errors=False)
    if found is not None:
        run = found.run
        entry.baseline_source = "stored"
        say(f"{name}: baseline run {run['id']} from the store")
    else:
        say(f"{name}: evaluating the base version ({base.commit[:12]}) with {resolved.spec}")
        run = run_eval(at.target, resolved, store=store, config=config, evalset=at.evalset,
                         options=eval_options, git=at.git)
        entry.baseline_source = "evaluated"
    entry.baseline_run = run["id"]
    entry.baseline_errors = row_errors(run)
    return run


def _current(prompt: Target, evalset: Any, resolved: Any, entry: _Entry, *,
             config: Config, store: Store, eval_options: EvalOptions,
             say: EventFn) -> RunRecord:
    """The run of the current version: a stored run of the same prompt and eval set bytes,
    model and server when there is one, else evaluated now."""
    found = standing_run(store, prompt.name, version=prompt.version,
                         evalset_version=evalset.version, model=resolved.spec,
                         base_url=resolved.cache_url, allow_errors=False)
    if found is not None:
        entry.current_source = "stored"
        say(f"{prompt.name}: current version already evaluated: run {found.run['id']} from the "
            "store (same prompt, eval set, model and server)")
        return found.run
    say(f"{prompt.name}: evaluating the current version with {resolved.spec}")
    entry.current_source = "evaluated"
    return run_eval(prompt, resolved, store=store, config=config, evalset=evalset,
                    options=eval_options)


def _check_one(cand: Candidate, *, root: Path, base: Base, config: Config, store: Store,
               options: CheckOptions, eval_options: EvalOptions, say: EventFn) -> PromptCheck:

    entry = _Entry(prompt=Path(cand.rel).stem, path=cand.rel, new=cand.new,
                   reasons=cand.reasons)
    try:
        prompt = load_target(cand.path)
        entry.prompt = prompt.name
        evalset = evalset_of(prompt)
        resolved = resolve_model(model_of(prompt, options.model), config)
        entry.model = resolved.spec

        # The baseline first: it is what the base commit shipped.
        baseline, why_none = None, "a new prompt has no baseline; only its absolute thresholds apply"
        if cand.base_rel is not None:
            try:
                baseline = _baseline(root / cand.base_rel, prompt.name, resolved.spec, entry,
                                     base=base, config=config, store=store, options=options,
                                     eval_options=eval_options, say=say)
            except InputError as exc:
                # The base version may be unusable now (invalid, no eval set, a model or
                # endpoint that is gone): the change must still be checkable.
                why_none = f"no baseline: {exc.message}"
                entry.warnings.append(f"no baseline: the prompt at {base.commit[:12]} cannot "
                                         f"be evaluated: {exc.message}")

        current = _current(prompt, evalset, resolved, entry, config=config, store=store,
                           eval_options=eval_options, say=say)
        entry.current_run = current["id"]
        entry.metrics = current.get("metrics") or {}
        entry.current_errors = row_errors(current)
        comparison = None
        if baseline is not None:
            comparison = compare_runs(store, baseline["id"], current["id"],
                                      significance=options.significance)
            entry.comparison = _trim_comparison(comparison)
        entry.gates = absolute_gates(prompt, current) + regression_gates(
            prompt, comparison, significance=options.significance, strict=options.strict,
            why_none=why_none)
        failed = failed_rows_error(entry.current_errors, entry.baseline_errors)
        if failed is not None:
            raise failed
    except PromptctlError as exc:
        entry.error = CheckError(message=str(exc), exit_code=exc.exit_code,
                                 kind="provider" if exc.exit_code == EXIT_PROVIDER else "input")
    return entry.result(_verdict(entry))


def _config_changes(base: Config, head: Config) -> list[str]:
    """What `head`'s promptctl.yaml changes against `base`'s, one phrase per difference."""
    out: list[str] = []
    for name in sorted(set(base.endpoints) | set(head.endpoints)):
        old, new = base.endpoints.get(name), head.endpoints.get(name)
        if old == new:
            continue
        if old is None:
            out.append(f"adds endpoint {name!r}")
        elif new is None:
            out.append(f"removes endpoint {name!r}")
        else:
            keys = sorted(k for k in {*old.settings, *new.settings}
                          if old.settings.get(k) != new.settings.get(k))
            keys += [f.name for f in dataclasses.fields(old)
                     if f.name not in ("name", "settings")
                     and getattr(old, f.name) != getattr(new, f.name)]
            out.append(f"changes endpoint {name!r} ({', '.join(keys)})")
    for model in sorted(set(base.pricing) | set(head.pricing)):
        if base.pricing.get(model) != head.pricing.get(model):
            verb = "adds" if model not in base.pricing else \
                "removes" if model not in head.pricing else "changes"
            out.append(f"{verb} the price of {model!r}")
    if base.store != head.store:
        out.append("changes store")
    if base.concurrency != head.concurrency:
        out.append("changes concurrency")
    return out


def trusted_config(config: Config, base_ref: str | None, *,
                   trust_pr_config: bool = False) -> tuple[Config, CheckConfig]:
    """The configuration `check` may use, and where it came from.

    promptctl.yaml says where requests go (`base_url`), which secret goes with them
    (`api_key_env`), what they cost and where results are written. A pull request
    changes the work tree's copy, and CI runs `check` with its secrets in the
    environment, so by default the base commit's copy decides all of that; the
    differences are reported. `trust_pr_config` takes the work tree's copy instead (for
    repositories whose pull requests come only from people who hold the secrets anyway).
    A file named by $PROMPTCTL_CONFIG outside the repository is the operator's, not the
    pull request's, and is used as it is."""
    root = config.root
    env_path = os.environ.get(ENV_CONFIG)
    path = Path(env_path).resolve() if env_path else root / CONFIG_FILE
    try:
        rel: str | None = path.relative_to(root).as_posix()
    except ValueError:
        rel = None
    if rel is None:
        return config, CheckConfig(source="operator", path=str(path), changes=())
    repo = open_repo(root, purpose="promptctl check compares with a git commit: run it in the "
                     "repository that holds the prompts")
    base = resolve_base(repo, base_ref)
    raw = repo.read(base.commit, rel)
    label = Path(f"{rel} at {base.commit[:12]}")
    if raw is None:
        base_config = Config(root=root)
    else:
        try:
            base_config = config_from_text(root, decode_utf8(raw, label), label)
        except InputError as exc:
            if not trust_pr_config:
                raise InputError(f"the base commit's promptctl.yaml cannot be used: {exc.message}",
                                 file=label, line=exc.line,
                                 fix="fix it on the base branch, or pass --trust-pr-config to "
                                 "use this change's promptctl.yaml") from None
            base_config = Config(root=root)
    changes = tuple(_config_changes(base_config, config))
    if trust_pr_config:
        return config, CheckConfig(source="work tree", path=rel, changes=changes)
    withheld = frozenset(set(config.endpoints) - set(base_config.endpoints))
    # Messages still name the work tree's file, so an error points where the user edits.
    trusted = dataclasses.replace(base_config, path=config.path or root / rel, withheld=withheld)
    return trusted, CheckConfig(source="base", path=rel, changes=changes)


def run_check(config: Config, store: Store, options: CheckOptions,
              on_event: EventFn | None = None,
              config_source: CheckConfig | None = None) -> CheckResult:
    """Find the prompts a change affects, evaluate them and their baselines, apply the gates."""
    if not 0 < options.significance < 1:
        raise InputError(f"significance must be between 0 and 1, not {options.significance}",
                         fix="e.g. --significance 0.05")
    say = on_event or (lambda _msg: None)
    repo = open_repo(config.root, purpose="promptctl check compares with a git commit: run it in "
                     "the repository that holds the prompts")
    base = resolve_base(repo, options.base)
    affected, unchanged, deleted = find_affected(repo, base.commit, options.prompts)
    eval_options = EvalOptions(concurrency=options.concurrency, timeout=options.timeout,
                               max_response_mb=options.max_response_mb)
    results = [_check_one(c, root=repo.root, base=base, config=config, store=store,
                          options=options, eval_options=eval_options, say=say) for c in affected]
    head = repo.state()
    counts = {s: sum(1 for r in results if r.status == s)
              for s in ("pass", "warn", "fail", "error")}
    return CheckResult(
        base=CheckBase(ref=base.ref, commit=base.commit, how=base.how),
        head=CheckHead(commit=head.commit, dirty=head.dirty, branch=head.branch),
        significance=options.significance,
        strict=options.strict,
        prompts=tuple(results),
        unchanged=tuple(PromptFile(prompt=u["prompt"], path=u["path"]) for u in unchanged),
        deleted=tuple(PromptFile(prompt=d["prompt"], path=d["path"]) for d in deleted),
        summary=CheckSummary(checked=len(results), pass_=counts["pass"], warn=counts["warn"],
                             fail=counts["fail"], error=counts["error"],
                             unchanged=len(unchanged), deleted=len(deleted)),
        exit_code=exit_code(results),
        config=config_source,
    )
