"""The CI gate behind `promptctl check`: which prompts a change affects, and whether they pass.

A prompt is affected when its file or the eval set it names differs between
the base commit and the work tree (prompts have no include mechanism, so those
two files are all of a prompt's inputs). For each affected prompt the current
version is evaluated (the completion cache makes a re-run free), the baseline
is taken from the store (a complete run of the same prompt bytes, eval set
bytes and model) or evaluated from git's object store at the base commit, and
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

Everything returned is plain data (dicts, lists, numbers, strings) so the CLI
can render it as a table, Markdown, JUnit XML or JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptctl.config import Config
from promptctl.errors import InputError, PromptctlError, ProviderError
from promptctl.prompts import LOWER_IS_BETTER, Prompt
from promptctl.runner import EvalOptions
from promptctl.store import RunRecord, Store

DEFAULT_SIGNIFICANCE = 0.05
DEFAULT_BASES = ("origin/main", "main")
PROMPTS_DIR = "prompts"
PROMPT_SUFFIXES = (".yaml", ".yml")
# Float noise in a delta must not turn "exactly at the limit" into a failure.
TOLERANCE = 1e-9

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_PROVIDER = 0, 1, 2, 3

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


def _open_repo(root: Path) -> Any:
    import git

    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError("not inside a git repository", file=root,
                         fix="promptctl check compares with a git commit: run it in the "
                         "repository that holds the prompts") from None


def resolve_base(repo: Any, ref: str | None) -> Base:
    """`ref` as given, else the merge base of HEAD with origin/main (or main)."""
    import git

    try:
        head = repo.head.commit
    except ValueError:
        raise InputError("the repository has no commit yet",
                         fix="commit the prompts first, or pass --base REF") from None
    if ref is not None:
        try:
            commit = repo.commit(ref)
        except (git.BadName, ValueError, git.GitCommandError):
            raise InputError(f"unknown git ref {ref!r} for --base",
                             fix="name a branch, tag or commit (in CI, fetch history: "
                             "actions/checkout with fetch-depth: 0)") from None
        return Base(ref=ref, commit=str(commit.hexsha), how=f"--base {ref}")
    for candidate in DEFAULT_BASES:
        try:
            other = repo.commit(candidate)
        except (git.BadName, ValueError, git.GitCommandError):
            continue
        bases = repo.merge_base(head, other)
        if bases:
            return Base(ref=candidate, commit=str(bases[0].hexsha),
                        how=f"merge base of HEAD and {candidate}")
    raise InputError("no base to compare with: neither origin/main nor main exists here",
                     fix="pass --base REF (a branch, tag or commit)")


def _blob(commit: Any, rel: str) -> bytes | None:
    try:
        obj = commit.tree / rel
    except KeyError:
        return None
    if obj.type != "blob":
        return None
    data: bytes = obj.data_stream.read()
    return data


def _base_prompt_files(commit: Any) -> list[str]:
    try:
        tree = commit.tree / PROMPTS_DIR
    except KeyError:
        return []
    return sorted(str(b.path) for b in tree.blobs if b.path.lower().endswith(PROMPT_SUFFIXES))


def _rel(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


# --- finding affected prompts ----------------------------------------------------------------


def _prompt_name(data: bytes | None, rel: str) -> str:
    """The `name:` of a prompt file's bytes, without validating the rest."""
    import yaml

    stem = Path(rel).stem
    if data is None:
        return stem
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError:
        return stem
    name = raw.get("name") if isinstance(raw, dict) else None
    return name if isinstance(name, str) and name else stem


def _evalset_rel(data: bytes, rel: str) -> str | None:
    """The eval set a prompt file's bytes name, relative to the repository root."""
    import posixpath

    import yaml

    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError:
        return None
    evalset = raw.get("evalset") if isinstance(raw, dict) else None
    if not isinstance(evalset, str) or not evalset.strip():
        return None
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), evalset))
    return None if joined.startswith("..") or posixpath.isabs(joined) else joined


def find_affected(root: Path, commit: Any, selected: list[str]) -> tuple[
        list[Candidate], list[dict[str, Any]], list[dict[str, Any]]]:
    """(affected prompts, unchanged prompts, deleted prompts) between `commit` and the work tree.

    `selected` (paths or prompt names) narrows the prompts considered; deleted
    prompts are listed only when nothing is selected.
    """
    prompts_dir = root / PROMPTS_DIR
    current: list[Path] = []
    if prompts_dir.is_dir():
        current = sorted(p for p in prompts_dir.iterdir()
                         if p.is_file() and p.suffix.lower() in PROMPT_SUFFIXES)
    base_files = _base_prompt_files(commit)
    current_rels = {_rel(p, root) for p in current}
    gone = [r for r in base_files if r not in current_rels]
    gone_by_name = {_prompt_name(_blob(commit, r), r): r for r in gone}

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
        base_data = _blob(commit, rel)
        reasons: list[str] = []
        if base_data is None:
            moved = gone_by_name.get(_prompt_name(data, rel))
            if moved is not None:
                base_rel, base_data = moved, _blob(commit, moved)
                renamed_from.add(moved)
                reasons.append(f"renamed from {moved}")
            else:
                base_rel = None
                reasons.append("new prompt")
        if base_data is not None and base_data != data:
            reasons.append("prompt file changed")
        set_rel = _evalset_rel(data, rel)
        if base_data is not None and set_rel is not None:
            set_now = _read(root / set_rel)
            set_then = _blob(commit, set_rel)
            if set_then is None:
                reasons.append(f"eval set {set_rel} is new")
            elif set_now != set_then:
                reasons.append(f"eval set {set_rel} changed")
        if reasons:
            affected.append(Candidate(path, rel, base_rel, reasons))
        else:
            unchanged.append({"prompt": _prompt_name(data, rel), "path": rel})
    deleted = [] if selected else [
        {"prompt": _prompt_name(_blob(commit, r), r), "path": r}
        for r in gone if r not in renamed_from]
    return affected, unchanged, deleted


# --- baselines and gates ---------------------------------------------------------------------


def stored_baseline(store: Store, prompt: Prompt, evalset_version: str, model: str,
                    commit: str) -> RunRecord | None:
    """A complete, error-free, full run of these exact prompt and eval set bytes with `model`.

    Runs made at the base commit on a clean tree come first; any other run of
    the same bytes answers the same requests, so it is as good a baseline.
    """
    found = []
    for run in store.list_runs(prompt.name):
        options = run.get("options") or {}
        summary = run.get("summary") or {}
        if (run["status"] == "complete" and run["prompt_version"] == prompt.version
                and run["evalset_version"] == evalset_version and run["model"] == model
                and options.get("limit") is None and options.get("repeat", 1) == 1
                and not summary.get("errors") and not summary.get("fewshot_errors")):
            found.append(run)
    found.sort(key=lambda r: (r["git_commit"] == commit and not r["git_dirty"], r["id"]),
               reverse=True)
    return found[0] if found else None


def _errors(run: RunRecord) -> int:
    summary = run.get("summary") or {}
    return int(summary.get("errors") or 0) + int(summary.get("fewshot_errors") or 0)


def absolute_gates(prompt: Prompt, run: RunRecord) -> list[dict[str, Any]]:
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
            gate: dict[str, Any] = {"id": f"{metric}.{kind}", "metric": metric, "kind": kind,
                                    "limit": limit, "value": value, "ci95": result.get("ci95"),
                                    "n": result.get("n")}
            if metric not in metrics:
                gate.update(status="fail", message=f"{metric} is not computed by this prompt "
                            "(add it to metrics:)")
            elif value is None:
                gate.update(status="fail", message=f"{metric} has no value: no row gave a "
                            "usable answer")
            elif (value >= limit - TOLERANCE) if kind == "min" else (value <= limit + TOLERANCE):
                gate.update(status="pass", message=f"{metric} {value:.4g} "
                            f"{'>=' if kind == 'min' else '<='} {limit:g}")
            else:
                gate.update(status="fail", message=f"{metric} {value:.4g} is "
                            f"{'below the minimum' if kind == 'min' else 'above the maximum'} "
                            f"{limit:g}")
            gates.append(gate)
    return gates


def regression_gates(prompt: Prompt, comparison: dict[str, Any] | None, *, significance: float,
                     strict: bool, why_none: str = "no baseline") -> list[dict[str, Any]]:
    """One gate per `max_regression: {metric: limit}`, on the paired comparison with the baseline.

    The drop is -delta for a metric where higher is better and +delta where
    lower is better. Beyond the limit it fails when p < significance (or
    always, with `strict`), and warns otherwise.
    """
    limits = prompt.thresholds.get("max_regression") or {}
    gates = []
    for metric, raw_limit in limits.items():
        limit = float(raw_limit)
        gate: dict[str, Any] = {"id": f"{metric}.max_regression", "metric": metric,
                                "kind": "max_regression", "limit": limit}
        entry = (comparison or {}).get("metrics", {}).get(metric) if comparison else None
        if comparison is None:
            gate.update(status="skip", message=f"not applied: {why_none}")
        elif entry is None or entry.get("delta") is None:
            gate.update(status="skip", message=f"not applied: {metric} could not be compared "
                        "with the baseline (not computed on both sides, or too few paired rows)")
        else:
            higher = entry.get("higher_is_better", metric not in LOWER_IS_BETTER)
            delta = float(entry["delta"])
            drop = -delta if higher else delta
            p = entry.get("p_value")
            gate.update(value=entry.get("b"), baseline=entry.get("a"), delta=delta, drop=drop,
                        ci95=entry.get("ci95"), p_value=p, test=entry.get("test"),
                        n=entry.get("n"), higher_is_better=higher)
            p_text = "p unknown" if p is None else f"p={p:.3g}"
            if drop <= limit + TOLERANCE:
                gate.update(status="pass", message=f"{metric} drop {drop:+.4g} is within "
                            f"{limit:g} ({p_text})")
            elif strict:
                gate.update(status="fail", message=f"{metric} dropped by {drop:.4g}, more than "
                            f"{limit:g} ({p_text}; --strict fails on the raw drop)")
            elif p is not None and p < significance:
                gate.update(status="fail", message=f"{metric} dropped by {drop:.4g}, more than "
                            f"{limit:g}, and the drop is significant ({p_text} < {significance:g})")
            else:
                gate.update(status="warn", message=f"{metric} dropped by {drop:.4g}, more than "
                            f"{limit:g}, but not significantly ({p_text} >= {significance:g}): "
                            "could be noise; --strict would fail it")
        gates.append(gate)
    return gates


def _trim_comparison(comparison: dict[str, Any]) -> dict[str, Any]:
    keep = ("metrics", "paired_rows", "only_in_a", "only_in_b", "errors_excluded", "flipped",
            "warnings")
    return {k: comparison.get(k) for k in keep}


def _verdict(entry: dict[str, Any]) -> str:
    if entry.get("error") is not None:
        return "error"
    statuses = {g["status"] for g in entry["gates"]}
    if "fail" in statuses:
        return "fail"
    if "warn" in statuses:
        return "warn"
    return "pass"


def exit_code(prompts: list[dict[str, Any]]) -> int:
    """2 input error, else 3 provider failure, else 1 failed gate, else 0."""
    codes = {(p.get("error") or {}).get("exit_code") for p in prompts}
    if EXIT_INPUT in codes:
        return EXIT_INPUT
    if EXIT_PROVIDER in codes:
        return EXIT_PROVIDER
    if any(p["status"] == "fail" for p in prompts):
        return EXIT_GATE
    return EXIT_OK


# --- the check -------------------------------------------------------------------------------


def _baseline(path: Path, name: str, spec: str, entry: dict[str, Any], *, base: Base,
              config: Config, store: Store, options: CheckOptions, eval_options: EvalOptions,
              say: EventFn) -> RunRecord:
    """The run of the prompt at the base commit: from the store, else evaluated from git."""
    from promptctl.providers import resolve_model
    from promptctl.runner import run_eval
    from promptctl.versions import prompt_at_ref

    at = prompt_at_ref(path, base.commit)
    if at.evalset is None:
        raise InputError("the base version names no eval set")
    # Without --model each side runs the model its own file names, so a change
    # of `model:` in the pull request is measured too.
    resolved = resolve_model(options.model or at.prompt.model or spec, config)
    entry["baseline_model"] = resolved.spec
    if resolved.spec != spec:
        entry["warnings"].append(f"the change switches the model from {resolved.spec} to {spec}")
    run = stored_baseline(store, at.prompt, at.evalset.version, resolved.spec, base.commit)
    if run is not None:
        entry["baseline_source"] = "stored"
        say(f"{name}: baseline run {run['id']} from the store")
    else:
        say(f"{name}: evaluating the base version ({base.commit[:12]}) with {resolved.spec}")
        run = run_eval(at.prompt, resolved, store=store, config=config, evalset=at.evalset,
                       options=eval_options, git=at.git)
        entry["baseline_source"] = "evaluated"
    entry["baseline_run"] = run["id"]
    entry["row_errors"]["baseline"] = _errors(run)
    return run


def _check_one(cand: Candidate, *, root: Path, base: Base, config: Config, store: Store,
               options: CheckOptions, eval_options: EvalOptions, say: EventFn) -> dict[str, Any]:
    from promptctl.compare import compare_runs
    from promptctl.evalsets import load_evalset
    from promptctl.prompts import load_prompt
    from promptctl.providers import resolve_model
    from promptctl.runner import run_eval

    entry: dict[str, Any] = {
        "prompt": Path(cand.rel).stem, "path": cand.rel, "new": cand.new,
        "reasons": cand.reasons, "status": "error", "model": None, "baseline_model": None,
        "current_run": None, "baseline_run": None, "baseline_source": None,
        "metrics": {}, "comparison": None, "gates": [], "warnings": [], "error": None,
        "row_errors": {"current": 0, "baseline": 0},
    }
    try:
        prompt = load_prompt(cand.path)
        entry["prompt"] = prompt.name
        if prompt.evalset is None:
            raise InputError("no eval set: check needs the prompt to name one", file=prompt.path,
                             fix="add evalset: ../evalsets/NAME.jsonl to the prompt file")
        evalset = load_evalset(prompt.evalset)
        spec = options.model or prompt.model
        if not spec:
            raise InputError("no model: the prompt names none", file=prompt.path,
                             fix="add model: to the prompt file or pass --model")
        resolved = resolve_model(spec, config)
        entry["model"] = resolved.spec

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
                entry["warnings"].append(f"no baseline: the prompt at {base.commit[:12]} cannot "
                                         f"be evaluated: {exc.message}")

        say(f"{prompt.name}: evaluating the current version with {resolved.spec}")
        current = run_eval(prompt, resolved, store=store, config=config, evalset=evalset,
                           options=eval_options)
        entry["current_run"] = current["id"]
        entry["metrics"] = current.get("metrics") or {}
        entry["row_errors"]["current"] = _errors(current)
        comparison = None
        if baseline is not None:
            comparison = compare_runs(store, baseline["id"], current["id"])
            entry["comparison"] = _trim_comparison(comparison)
        entry["gates"] = absolute_gates(prompt, current) + regression_gates(
            prompt, comparison, significance=options.significance, strict=options.strict,
            why_none=why_none)
        failed_rows = entry["row_errors"]["current"] + entry["row_errors"]["baseline"]
        if failed_rows:
            raise ProviderError(f"{failed_rows} request(s) failed after every retry (current "
                                f"{entry['row_errors']['current']}, baseline "
                                f"{entry['row_errors']['baseline']}): the verdict would rest on "
                                "missing rows",
                                fix="re-run when the provider is back (answers so far are cached)")
    except PromptctlError as exc:
        entry["error"] = {"message": str(exc), "exit_code": exc.exit_code,
                          "kind": "provider" if exc.exit_code == EXIT_PROVIDER else "input"}
    entry["status"] = _verdict(entry)
    return entry


def run_check(config: Config, store: Store, options: CheckOptions,
              on_event: EventFn | None = None) -> dict[str, Any]:
    """Find the prompts a change affects, evaluate them and their baselines, apply the gates."""
    from promptctl.gitinfo import git_state

    if not 0 < options.significance < 1:
        raise InputError(f"significance must be between 0 and 1, not {options.significance}",
                         fix="e.g. --significance 0.05")
    say = on_event or (lambda _msg: None)
    repo = _open_repo(config.root)
    root = Path(repo.working_tree_dir).resolve()
    base = resolve_base(repo, options.base)
    commit = repo.commit(base.commit)
    affected, unchanged, deleted = find_affected(root, commit, options.prompts)
    eval_options = EvalOptions(concurrency=options.concurrency)
    results = [_check_one(c, root=root, base=base, config=config, store=store, options=options,
                          eval_options=eval_options, say=say) for c in affected]
    head = git_state(root)
    counts = {s: sum(1 for r in results if r["status"] == s)
              for s in ("pass", "warn", "fail", "error")}
    return {
        "base": {"ref": base.ref, "commit": base.commit, "how": base.how},
        "head": {"commit": head.commit, "dirty": head.dirty, "branch": head.branch},
        "significance": options.significance,
        "strict": options.strict,
        "prompts": results,
        "unchanged": unchanged,
        "deleted": deleted,
        "summary": {"checked": len(results), **counts, "unchanged": len(unchanged),
                    "deleted": len(deleted)},
        "exit_code": exit_code(results),
    }
